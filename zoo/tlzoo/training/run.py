"""``tlzoo train``: every strategy, for torch and Keras backbones, into a run directory.

data -> backbone -> (cached features -> head) or (fine-tuning loop) -> run directory
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from .. import __version__
from .. import data as datamod
from ..adapters import adapter_for, framework_spec
from ..backbone import Backbone, check_input_size, get_backbone
from ..distributed import world
from .. import engine_memory, feature_engines, model_card, store
from ..errors import DataError, TlzooError, UsageError
from ..freeze import parse_freeze, parse_unit
from ..decode import ImageDecoder, recipe as decode_recipe
from ..specs import BackboneSpec, Preprocessing
from ..weights import ResolvedWeights, file_digest, preflight as preflight_weights, published as published_weights
from ..weights import resolve as resolve_weights
from ..registry import get_registry
from ..rundir import fault_point, new_run_dir, package_versions, reclaim_temp_files
from ..runfiles import (CONFUSION_MATRIX, ENVIRONMENT, FORMAT_VERSION, FULL_MODEL_FORMAT, HEAD, LEARNING_CURVES, METRICS,
                        REPORT, STATE_STEM, ClassifierMeta, RunFiles)  # fmt: skip
from . import autobatch, decoding
from . import cache as feature_cache
from .config import TrainConfig
from .data_prep import Splits, decode, plan, readable, recorded
from .engine import Collective, Engine
from .heads import HeadParams, choose_c, fit_linear, fit_mlp, head_scores, probabilities
from .metrics import best_epoch, classification_metrics, plot_confusion, plot_history
from .reporter import Reporter


class TrainingInterrupted(TlzooError):
    exit_code = 130


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def train(config: TrainConfig, reporter: Reporter | None = None, *, resume: Path | None = None,
          exist_ok: bool = False, given: Collection[str] | None = None,
          overrides: dict[str, Any] | None = None) -> TrainResult:  # fmt: skip
    """Train a classifier as ``config`` says; ``resume`` continues an interrupted run directory.

    ``given`` names the settings the user gave explicitly (default: those that differ from the defaults);
    they decide which options are refused for a strategy they do not fit and which are reported unused.
    ``overrides`` are options given together with ``resume``: only the device and workers may change.
    """
    from ..locks import release_leases

    try:
        return _train(config, reporter, resume=resume, exist_ok=exist_ok, given=given, overrides=overrides)
    finally:
        release_leases()  # the decoded-pixel store this run read may be evicted or cleared again


def _train(config: TrainConfig, reporter: Reporter | None = None, *, resume: Path | None = None,
           exist_ok: bool = False, given: Collection[str] | None = None,
           overrides: dict[str, Any] | None = None) -> TrainResult:  # fmt: skip
    job = world()
    # Under torchrun every rank runs this function; rank 0 alone prints and writes.
    reporter = (reporter or Reporter()) if job.main else Reporter()
    started = time.perf_counter()
    notes: list[str] = []
    if resume is not None:
        config, notes = resume_config(Path(resume), overrides or {})
        given = config.given_by_default()
        config.validate()
    else:
        given = set(given) if given is not None else config.given_by_default()
        config, notes = config.checked(given)
    unused = config.unused(given)
    spec = get_registry().resolve(config.backbone, config.framework)
    size = check_input_size(spec, config.image_size,
                            published_weights(spec, None if config.strategy == "scratch" else config.weights))
    _check_units(spec, config)  # --freeze 99 fails here, before any image is decoded
    if config.threads is not None:
        adapter_for(spec.framework).set_threads(config.threads)
    preflight_weights(spec, None if config.strategy == "scratch" else config.weights)
    for note in notes:
        reporter.info(note)
    if unused:
        reporter.info(f"not used by {config.describe_choice()}: {', '.join(unused)}")
    splits = recorded(Path(resume), config) if resume is not None else plan(config, reporter)
    feature_extract = config.strategy == "feature-extract"
    model = Model(spec, config, size, len(splits.classes))
    if config.decoder == "gpu":
        model.decoder  # refused now where there is none, not at the first image
    if not feature_extract:
        splits = decode(splits, size, config, reporter, model.preprocessing, model.decoder_for(reporter))
        splits.warn_skipped(reporter)
    splits.show_counts(reporter)
    comm: Collective = Collective()
    # A feature-extract run builds its backbone on its first cache miss; one that runs on several processes
    # builds it now, since every rank takes part in the extraction.
    # An explicit --device is checked now (a run whose features are all cached would otherwise never use it).
    if not feature_extract or job.distributed or config.device != "auto":
        if not feature_extract:
            for stage in stages_for(config, len(model.backbone.units)):  # every --freeze checked before anything is written
                model.backbone.freeze(stage.freeze)
        comm = model.engine
        if job.distributed:
            model.engine.start_distributed(job)

    created, out_dir_existed = False, Path(config.out_dir).is_dir()
    if resume is not None:
        run_dir = Path(resume)
        if comm.main:
            reclaim_temp_files(run_dir)  # a checkpoint write killed half-way
    elif comm.main:
        run_dir, created = new_run_dir(Path(config.out_dir), config.name or f"{spec.name}-{config.strategy}",
                                       exist_ok=exist_ok)  # fmt: skip
    run_dir = Path(comm.broadcast(str(run_dir) if comm.main else None))
    if config.tensorboard and comm.main:
        from .tensorboard import FOLDER, TensorBoardReporter

        reporter = TensorBoardReporter(reporter, run_dir / FOLDER)
    try:
        return _train_in(run_dir, resume, config, spec, size, splits, model, comm, reporter, started, unused,
                         batch_given="batch_size" in given)  # fmt: skip
    except BaseException:
        if created and comm.main:
            _discard_unstarted(run_dir, model, None if out_dir_existed else Path(config.out_dir))
        raise
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()


class Model:
    """The run's weights, backbone and training engine, each made on first use: a feature-extract run whose
    features are all cached and whose backbone is recorded by reference builds none of them (and imports
    no framework)."""

    def __init__(self, spec: BackboneSpec, config: TrainConfig, size: tuple[int, int], n_classes: int) -> None:
        self.spec, self.config, self.size, self.n_classes = spec, config, size, n_classes
        self.tap = _tap(spec, config, self)

    @cached_property
    def weights(self) -> ResolvedWeights | None:
        """The pretrained weights file, checked against its published hash (None: random initialisation)."""
        return resolve_weights(self.spec, None if self.config.strategy == "scratch" else self.config.weights)

    @cached_property
    def preprocessing(self) -> Preprocessing:
        """The backbone's preprocessing with the resize its weights were published with, or ``--resize``."""
        resize = None if self.config.resize == "auto" else self.config.resize
        # scratch loads no weights (its --weights is not used): it decodes as --weights none does, so it shares
        # the decoded-pixel store with the other strategies of a compare.
        weights = None if self.config.strategy == "scratch" else self.config.weights
        return self.spec.preprocessing_for(published_weights(self.spec, weights), resize)

    @cached_property
    def weights_sha256(self) -> str | None:
        return file_digest(self.weights.path, "sha256") if self.weights is not None else None

    @cached_property
    def backbone(self) -> Backbone:
        return get_backbone(self.spec, pretrained=self.weights or False, input_size=self.size, seed=self.config.seed)

    @cached_property
    def engine(self) -> Engine:
        return adapter_for(self.spec.framework).engine(self.backbone, self.n_classes, tap=self.tap,
                                                       dropout=self.config.dropout, seed=self.config.seed,
                                                       device=self.config.device)  # fmt: skip

    @cached_property
    def decoder(self) -> ImageDecoder | None:
        """Who decodes the run's JPEGs besides Pillow (``--decoder``; see :mod:`tlzoo.training.decoding`). Where no
        CUDA device is possible it is None without building anything."""
        cfg = self.config
        if cfg.decoder != "gpu" and decoding.predicted(cfg.decoder, self.spec, cfg.device) is None:
            return None
        own = cfg.strategy != "feature-extract" or cfg.feature_engine in (feature_engines.FRAMEWORK, feature_engines.AUTO)
        return decoding.resolve(cfg.decoder, self.spec.framework, self.engine.device if own else None)

    def decoder_for(self, reporter: Reporter) -> ImageDecoder | None:
        """:attr:`decoder`, said once when it is not Pillow."""
        decoder = self.decoder
        if decoder is not None and not self.__dict__.get("_decoder_said"):
            self.__dict__["_decoder_said"] = True
            reporter.info(f"JPEGs decoded on the GPU by {decoder.name}, other files by Pillow (--decoder cpu: all by "
                          f"Pillow)")  # fmt: skip
        return decoder

    @property
    def built(self) -> bool:
        return "backbone" in self.__dict__

    @property
    def has_engine(self) -> bool:
        return "engine" in self.__dict__

    @property
    def units(self) -> int:
        return len(self.spec.units) if self.spec.units else len(self.backbone.units)

    @property
    def device(self) -> str:
        """Where the run computed: the engine's device, or the CPU for a run that only fitted a head."""
        return self.engine.device if self.has_engine else "cpu"

    @property
    def head_only(self) -> bool:
        """Whether the run keeps its head alone and names its backbone by weights (see :mod:`tlzoo.runfiles`):
        feature-extract on published weights, in a framework whose adapter can assemble the classifier again."""
        return (self.config.strategy == "feature-extract" and self.weights is not None
                and not self.weights.tag.startswith("file:") and framework_spec(self.spec.framework).head_only_runs)

    def feature_key(self, decoder: str | None) -> dict[str, Any]:
        """Everything the features depend on besides the image files (the cache key's model half); ``decoder``
        names the JPEGs' decoder when it is not Pillow."""
        weights = {"sha256": self.weights_sha256} if self.weights is not None else {"random": self.backbone.weights_digest()}
        # auto keeps its features with the framework's: every engine it may pick is checked against them
        engine = self.config.feature_engine
        own = engine in (feature_engines.FRAMEWORK, feature_engines.AUTO)
        return {"backbone": self.spec.id, "weights": weights, "tap": self.tap, "size": list(self.size),
                "preprocessing": self.preprocessing.to_dict(), "decode": decode_recipe(self.preprocessing, decoder),
                "tlzoo": __version__,
                **({"engine": engine} if not own else {})}  # fmt: skip


def _tap(spec: BackboneSpec, config: TrainConfig, model: Model) -> int | None:
    if config.tap is None or not str(config.tap).strip():
        return None
    if spec.units:
        return parse_unit(config.tap, [u.name for u in spec.units])
    return model.backbone.resolve_tap(config.tap)


def _discard_unstarted(run_dir: Path, model: Model, made_out_dir: Path | None) -> None:
    """A run that failed before its first checkpoint leaves nothing that looks like a result (nor the
    ``--out-dir`` folder it made for it)."""
    import shutil

    if model.has_engine and RunFiles(run_dir).state(model.engine.state_suffix).exists():
        return  # resumable: keep it
    shutil.rmtree(run_dir, ignore_errors=True)
    if made_out_dir is not None:
        with contextlib.suppress(OSError):
            made_out_dir.rmdir()  # only when empty


def _check_units(spec: BackboneSpec, config: TrainConfig) -> None:
    """--freeze, --tap and --unfreeze against the backbone's published units (checked again once built)."""
    names = [u.name for u in spec.units]
    if not names:
        return
    try:
        if config.freeze is not None and config.strategy == "fine-tune":
            parse_freeze(config.freeze, names)
        if config.tap is not None and str(config.tap).strip():
            parse_unit(config.tap, names)
        if config.strategy == "two-stage":
            stages_for(config, len(names))
    except UsageError as exc:
        raise type(exc)(f"{spec.id}: {exc}") from None


def _train_in(run_dir: Path, resume: Path | None, config: TrainConfig, spec: BackboneSpec, size: tuple[int, int],
              splits: Splits, model: Model, comm: Collective, reporter: Reporter, started: float,
              unused: list[str], *, batch_given: bool = True) -> TrainResult:  # fmt: skip
    resolved = TrainConfig(**{**config.to_dict(), "backbone": spec.id, "framework": spec.framework,
                              "image_size": size[0] if size[0] == size[1] else config.image_size,
                              "data": str(splits.root)})  # fmt: skip
    files = RunFiles(run_dir)
    if resume is None and comm.main:
        resolved.save(files.config)
        files.write_labels(splits.classes)
    reporter.info(f"run directory: {run_dir}")
    weights, tap = model.weights, model.tap
    if weights is not None and weights.recorded:
        reporter.info(f"{weights.path} has no published hash: it matches the sha256 recorded when it was first used")
    elif weights is not None and not weights.verified:
        reporter.warn(f"{weights.path} has no published hash to check it against")
    units = model.units
    reporter.info(
        f"{spec.id} ({'weights ' + weights.tag if weights else 'random init'}), {config.strategy}, "
        f"input {size[0]}x{size[1]}" + (f", device {model.device}" if model.built else "")
        + (f", tap unit {tap + 1} ({spec.units[tap].name if spec.units else model.backbone.units[tap].name})"
           if tap is not None else "")
    )  # fmt: skip

    extra: dict[str, Any] = {}
    if config.strategy == "feature-extract":
        # a CUDA device is the engine's where --device named one, else foreseen from the driver (nothing built)
        cuda = model.device.startswith("cuda") if model.has_engine else decoding.may_be_cuda(config.device)
        extract_batch, why = autobatch.feature_batch(config.batch_size, given=batch_given, cuda=cuda)
        if why:
            reporter.info(why)
        if config.batch_size == autobatch.AUTO:
            config = dataclasses.replace(config, batch_size=autobatch.DEFAULT)
        splits, history, head, eval_features, extra = _feature_extract(model, splits, config, reporter, comm,
                                                                       extract_batch)  # fmt: skip
        if comm.main:
            files.write_split(splits.rows())  # the readable images: known once every part was read
        eval_proba = probabilities(head.logits(eval_features), head.output)
        output, trainable, head_meta = head.output, sum(w.size + b.size for w, b in zip(head.weights, head.biases)), \
            {"sizes": head.sizes, "dropout": head.dropout}
        frozen = units
    else:
        engine = model.engine
        engine.set_compile(config.compile)
        if resume is None and comm.main:
            files.write_split(splits.rows())
        history, batch = _fit(engine, model.backbone, splits, config, reporter, run_dir, resume is not None)
        extra = {"compile": engine.compile_record(), "images_decoded": int(sum(comm.gather(splits.decoded))), **batch}
        if engine.compile_note:
            reporter.warn(f"--compile {config.compile}: {engine.compile_note}")
        eval_proba = probabilities(engine.logits(splits.eval_set.images), engine.output)  # type: ignore[union-attr]
        output, trainable, head_meta, frozen = engine.output, engine.trainable_params(), engine.head_meta(), \
            model.backbone.frozen_units
    head_only = model.head_only
    if comm.main:
        if head_only:
            files.write_head(head)
        else:
            model.engine.save_model(run_dir)
    train_seconds = time.perf_counter() - started
    job = _job_record(comm, len(splits.train)) if isinstance(comm, Engine) else {}  # collective: every rank takes part

    metrics = classification_metrics(splits.eval_set.labels, eval_proba, splits.classes)
    metrics.update(split=splits.eval_name, train_seconds=round(train_seconds, 3), peak_memory_mb=_peak_memory_mb(),
                   trainable_params=int(trainable), frozen_units=frozen, units=units,
                   best_epoch=best_epoch(history) if len(history) > 1 else None, **extra)  # fmt: skip
    meta = ClassifierMeta(
        framework=spec.framework, backbone=spec.id, input_size=size, tap=tap, head=head_meta, output=output,
        classes=splits.classes, preprocessing=model.preprocessing, weights=weights.tag if weights else None,
        strategy=config.strategy, model_file=HEAD if head_only else adapter_for(spec.framework).model_file,
        plugin=get_registry().provider(spec.id), tlzoo_version=__version__,
        weights_sha256=model.weights_sha256 if head_only else None,
        format_version=FORMAT_VERSION if head_only else FULL_MODEL_FORMAT,
    )  # fmt: skip
    if comm.main:  # under torchrun, rank 0 alone writes the run's files
        files.write_meta(meta)
        files.write_json(METRICS, metrics)
        files.write_history(history)
        files.write_json(ENVIRONMENT, {**_environment(model.device, splits, remember=config.cache), **job})
        files.write_json(REPORT, {"skipped_images": [{"path": p, "error": e} for p, e in splits.skipped]})
        plot_history(history, files / LEARNING_CURVES, f"{spec.id} {config.strategy}")
        counts = {name: part.counts() for name, part in splits.parts()}
        model_card.write(run_dir, config=resolved.to_dict(), spec=spec, weights=weights, metrics=metrics,
                         counts=counts, skipped=len(splits.skipped), unused=unused)  # fmt: skip
        plot_confusion(metrics["confusion_matrix"], splits.classes, files / CONFUSION_MATRIX,
                       f"{spec.id} {config.strategy} ({splits.eval_name}, acc {metrics['accuracy']:.3f})")  # fmt: skip
        if model.has_engine:
            files.state(model.engine.state_suffix).unlink(missing_ok=True)
    comm.barrier()
    summary = {
        "run_dir": str(run_dir), "backbone": spec.id, "strategy": config.strategy,
        "split": splits.eval_name, "accuracy": metrics["accuracy"], "log_loss": metrics["log_loss"],
        "macro_f1": metrics["macro_f1"], "train_seconds": metrics["train_seconds"], "epochs": len(history),
        "frozen_units": frozen, "units": units, "unused_options": unused, **extra,
    }  # fmt: skip
    return TrainResult(run_dir=run_dir, metrics=metrics, history=history, summary=summary)


def _job_record(engine: Engine, n_train: int) -> dict[str, Any]:
    """What a data-parallel run records: world size, backend, each rank's share of the last epoch and its weights."""
    info = engine.job_info
    if not info:
        return {}
    if engine.world_size == 1:  # several devices in one process (Keras' MirroredStrategy)
        return {"distributed": {**info, "train_images": n_train}}
    seen = engine.gather(engine.last_epoch_indices())
    record = {**info, "train_images": n_train, "weights_sha256_per_rank": engine.gather(engine.model_digest())}
    if any(seen):  # strategies that train: each rank's shard of the last epoch
        distinct = set().union(*map(set, seen))
        record.update(last_epoch_images_per_rank=[len(s) for s in seen], last_epoch_distinct_images=len(distinct),
                      last_epoch_images_seen_twice=sum(map(len, seen)) - len(distinct))  # fmt: skip
    else:  # feature-extract: each rank extracted every world_size-th image
        record["feature_images_per_rank"] = [len(range(r, n_train, engine.world_size)) for r in range(engine.world_size)]
    return {"distributed": record}


# ---------------------------------------------------------------- feature extraction


def _features(model: Model, key: dict[str, Any], part: datamod.ImageList, cfg: TrainConfig, reporter: Reporter,
              what: str, comm: Collective, run: Callable[[], Any], decoded: list[int]) -> tuple[feature_cache.Entry, bool]:  # fmt: skip
    """The features of ``part``'s readable images: from the cache (found by the files, nothing decoded), or
    decoded and extracted a batch at a time."""
    slot = feature_cache.Slot(key, part)
    if cfg.cache:
        entry = slot.load()
        if entry is not None:
            if cfg.strict and entry.skipped:
                path, why = entry.skipped[0]
                raise DataError(f"cannot read image {path}: {why}")
            reporter.info(f"feature cache hit: {what} features reused ({slot.path})")
            return entry, True
    # Under torchrun each rank extracts every world_size-th image; the shards are gathered back in order.
    positions = np.arange(comm.rank, len(part), comm.world_size)
    # The decoded-pixel store gives the images it holds and takes the ones decoded here (within its cap), so a
    # fine-tune or another backbone of the same input after this run decodes nothing.
    decoder = model.decoder_for(reporter)
    if (decoder.name if decoder is not None else None) != key["decode"].get("jpeg_decoder"):
        slot = feature_cache.Slot(model.feature_key(decoder.name if decoder is not None else None), part)
    stream = store.Stream(feature_cache.cache_root().parent, model.size, model.preprocessing, decoder) if cfg.cache else None
    why_not = stream.start(len(positions)) if stream is not None else None
    try:
        with reporter.task(f"extracting {what} features", len(positions)) as advance:
            shard = _extract(model, part.subset(positions), cfg, run, advance, stream, decoder) if len(positions) else None
    except BaseException:
        if stream is not None:
            stream.abort()  # no partial segment left behind
        raise
    why_not = (stream.close() if stream is not None else None) or why_not
    if why_not and comm.main:
        reporter.info(f"decoded-pixel store not filled: {why_not}")
    decoded[0] += stream.decoded if stream is not None else len(positions)
    entry = _merge(comm.gather(shard), comm.world_size)
    if cfg.cache and comm.main:
        try:
            slot.store(entry)
        except OSError as exc:  # the cache is an optimisation: a full or read-only disk must not stop training
            reporter.warn(f"feature cache not written ({exc.strerror or exc}: {exc.filename or feature_cache.cache_root()}); "
                          f"training goes on without it")  # fmt: skip
    return entry, False


def _extract(model: Model, files: datamod.ImageList, cfg: TrainConfig, run: Callable[[], Any],
             advance: Callable[[int], None], stream: store.Stream | None,
             decoder: ImageDecoder | None) -> feature_cache.Entry:  # fmt: skip
    """Decode (or read from the store) on a pool of threads while the runner works on the batch before. The
    runner is given the batch itself (a reopened engine has no backbone built to go through)."""
    from ..preprocess import normalize

    feats, kept, skipped = [], [], []
    kept_by = (lambda path, jpeg, pixels: stream.add(path, jpeg.digest, pixels)) if stream is not None else None
    for batch in datamod.decode_batches(files.paths, model.size, batch_size=cfg.batch, threads=cfg.workers or None,
                                        strict=cfg.strict, prep=model.preprocessing, decoder=decoder,
                                        load=stream.load if stream is not None else None, decoded=kept_by):  # fmt: skip
        skipped += batch.skipped
        if len(batch.index):
            runner = run()
            # the same normalization as Backbone.preprocess, for a runner that does not take uint8 batches
            images = batch.images if getattr(runner, "takes_uint8", False) else normalize(batch.images, model.spec.preprocessing)
            feats.append(np.asarray(runner(images)).astype(np.float32, copy=False))
            kept.append(batch.index)
        advance(len(batch.index) + len(batch.skipped))
    if not feats:
        return feature_cache.Entry(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), skipped)
    return feature_cache.Entry(np.concatenate(feats), np.concatenate(kept), skipped)


def _merge(shards: list[feature_cache.Entry | None], world_size: int) -> feature_cache.Entry:
    """One entry from the ranks' shards (rank r held positions r, r + world_size, ...)."""
    present = [(rank, s) for rank, s in enumerate(shards) if s is not None]
    if len(present) == 1:
        return present[0][1]
    width = max(s.features.shape[1] for _, s in present)
    kept = np.concatenate([rank + s.kept * world_size for rank, s in present])
    features = np.concatenate([s.features if len(s.features) else np.zeros((0, width), np.float32) for _, s in present])
    order = np.argsort(kept, kind="stable")
    return feature_cache.Entry(features[order], kept[order], [x for _, s in present for x in s.skipped])


def _feature_extract(model: Model, splits: Splits, head_cfg: TrainConfig, reporter: Reporter, comm: Collective,
                     extract_batch: int) -> tuple[Splits, list[dict[str, Any]], HeadParams, np.ndarray, dict[str, Any]]:  # fmt: skip
    """Features of every part (cached or extracted, in batches of ``extract_batch``), then the head on them (at
    ``head_cfg``'s batch). Returns the splits without their unreadable images, the history, the head, the
    evaluation split's features and what the run records."""
    t0 = time.perf_counter()
    cfg = dataclasses.replace(head_cfg, batch_size=extract_batch)
    parts = list(splits.parts())
    left = [0]  # images this rank has still to extract, at most (for auto's choice)
    own = cfg.feature_engine in (feature_engines.FRAMEWORK, feature_engines.AUTO)

    engines = feature_cache.cache_root() / "engines"
    # auto's measurement is remembered by backbone, weights, tap, size, batch, device and machine (published or
    # file weights only: a random initialisation's digest would need the backbone built).
    memory = engine_memory.key({"backbone": model.spec.id, "weights": model.weights_sha256, "tap": model.tap,
                                "size": list(model.size), "batch": cfg.batch, "device": cfg.device}) \
        if cfg.feature_engine == feature_engines.AUTO and cfg.cache and model.weights is not None else None  # fmt: skip

    runners: list[Any] = []

    def run() -> Any:  # made on the first cache miss only: an engine may export the backbone first
        if not runners:
            started = time.perf_counter()
            remembered = engine_memory.recall(engines, memory) if memory is not None else None
            if remembered is not None and remembered.engine != feature_engines.FRAMEWORK:
                reopened = feature_engines.reopen(remembered, model.spec.preprocessing, engines)
                if not isinstance(reopened, str):  # the backbone is not built, its framework not imported
                    runners.append(reopened)
                    return reopened
                reporter.info(f"feature engine auto: the remembered {remembered.engine} does not reopen ({reopened}); "
                              f"measuring again")  # fmt: skip
            backbone = model.backbone
            backbone.freeze("all")
            device = model.engine.device if own else None
            # The framework's own engine runs where the run's training engine would (CUDA under --device auto);
            # a plugin's engine picks its own device, so no training engine is made for it.
            runners.append(feature_engines.runner(backbone, model.tap, cfg.feature_engine, engines, device=device,
                                                  images=left[0], batch_size=cfg.batch, remembered=remembered,
                                                  loaded_seconds=time.perf_counter() - started,
                                                  remembers=memory is not None))  # fmt: skip
            if not own:
                reporter.info(f"feature engine: {cfg.feature_engine} ({time.perf_counter() - started:.1f} s to "
                              f"prepare, checked against {model.spec.framework})")  # fmt: skip
        return runners[0]

    # Looked up under the decoder the run expects (told without building anything); stored under the one used.
    key = model.feature_key(decoding.predicted(cfg.decoder, model.spec, cfg.device))
    hits, feats, kept, skipped = {}, {}, {}, {}
    decoded = [0]  # images this rank decoded (the feature cache and the pixel store spare the rest)
    for i, (name, part) in enumerate(parts):
        assert isinstance(part, datamod.ImageList)
        left[0] = sum(len(p) for _, p in parts[i:]) // comm.world_size
        entry, hits[name] = _features(model, key, part, cfg, reporter, name, comm, run, decoded)
        feats[name], kept[name], skipped[name] = entry.features, entry.kept, entry.skipped
    made = runners[0] if runners else None
    choice = made.choice if isinstance(made, (feature_engines.Auto, feature_engines.Reopened)) else None
    if choice is not None and choice.line():
        reporter.info(str(choice.line()))
    if choice is not None and choice.measured and memory is not None and comm.main:
        assert isinstance(made, feature_engines.Auto)
        with contextlib.suppress(OSError):  # a read-only cache: the next run measures again
            engine_memory.remember(engines, memory, made.remembered_engine, choice.images_per_second, made.entry(),
                                   choice.start_seconds)  # fmt: skip
    splits = readable(splits, kept, skipped)
    splits.warn_skipped(reporter)
    feature_seconds = time.perf_counter() - t0
    n = len(splits.classes)
    t1 = time.perf_counter()
    head, history = comm.broadcast(_fit_head(feats, splits, head_cfg, reporter, model.spec, n) if comm.main else None)
    head_seconds = time.perf_counter() - t1
    if not model.head_only:
        model.engine.build(head)
    extra = {
        "feature_cache": "hit" if all(hits.values()) else ("partial" if any(hits.values()) else "miss"),
        "feature_seconds": round(feature_seconds, 3), "head_seconds": round(head_seconds, 3), "head": cfg.head,
        "feature_batch": extract_batch,
        "images_decoded": int(sum(comm.gather(decoded[0]))),
        "feature_engine": choice.engine if choice is not None else cfg.feature_engine,
        **({"feature_engine_auto": choice.record()} if choice is not None else {}),
    }  # fmt: skip
    return splits, history, head, feats[splits.eval_name], extra


def _fit_head(feats: dict[str, np.ndarray], splits: Splits, cfg: TrainConfig, reporter: Reporter, spec: BackboneSpec,
              n: int) -> tuple[HeadParams, list[dict[str, Any]]]:  # fmt: skip
    """The head on the cached features: once, on rank 0 under torchrun."""
    if cfg.head == "mlp":
        head = fit_mlp(
            feats["train"], splits.train.labels, feats["val"], splits.val.labels, n, hidden=cfg.hidden,
            dropout=cfg.dropout, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
            patience=cfg.patience, batch_size=cfg.batch, seed=cfg.seed,
            trainer=adapter_for(spec.framework).train_mlp,
            on_epoch=reporter.epoch,
        )  # fmt: skip
        history = head.history
    else:
        if cfg.c is not None:
            c, head = cfg.c, fit_linear(cfg.head, feats["train"], splits.train.labels, n, c=cfg.c, seed=cfg.seed)
        else:
            c, head = _choose_c(cfg.head, feats, splits, reporter, cfg.seed)
        history = [{**_row(1, "head", head, feats, splits), "C": c}]
        reporter.epoch(history[0])
    return head, history


C_GRID = (0.01, 0.1, 1.0, 10.0)


def _choose_c(kind: str, feats: dict[str, np.ndarray], splits: Splits, reporter: Reporter,
              seed: int) -> tuple[float, HeadParams]:  # fmt: skip
    """The regularization that does best on the validation data (see :func:`tlzoo.training.heads.choose_c`), and
    the head fitted with it: the path over C is warm-started and the winner is kept, not refitted."""
    c, head, scores = choose_c(kind, feats["train"], splits.train.labels, feats["val"], splits.val.labels,
                               len(splits.classes), C_GRID, seed=seed)  # fmt: skip
    reporter.info("--C chosen on validation data: " + ", ".join(f"C={value:g} acc {acc:.4f} log loss {loss:.3f}"
                                                                for value, acc, loss in scores)
                  + f" -> C={c:g} ({'best accuracy' if kind == 'linear-svm' else 'lowest log loss'})")  # fmt: skip
    return c, head


def _row(epoch: int, stage: str, head: HeadParams, feats: dict[str, np.ndarray], splits: Splits) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, "stage": stage}
    for prefix, name, part in (("", "train", splits.train), ("val_", "val", splits.val)):
        row[prefix + "loss"], row[prefix + "accuracy"] = head_scores(head, feats[name], part.labels, len(splits.classes))
    return row


# ---------------------------------------------------------------- fine-tuning loops


@dataclass
class Stage:
    name: str
    freeze: str
    epochs: int
    lr: float
    backbone_lr_mult: float
    norms_frozen: bool = False


def default_freeze(n_units: int) -> str:
    """fine-tune's default: freeze the first half of the units (the generic edges and textures)."""
    return str(n_units // 2)


def stages_for(cfg: TrainConfig, n_units: int) -> list[Stage]:
    if cfg.strategy == "scratch":
        return [Stage("scratch", "0", cfg.epochs, cfg.lr, 1.0)]
    if cfg.strategy == "two-stage":
        unfreeze = cfg.unfreeze.strip().lower()
        if unfreeze == "all":
            stage2_freeze = "0"
        else:
            try:
                k = int(unfreeze)
            except ValueError:
                raise UsageError(f"--unfreeze must be 'all' or a number of final units, got {cfg.unfreeze!r}") from None
            if not 1 <= k <= n_units:
                raise UsageError(f"--unfreeze {k} is out of range: use 1..{n_units} or 'all'")
            stage2_freeze = str(n_units - k)
        return [
            Stage("stage1", "all", cfg.stage1_epochs, cfg.lr, 0.0),
            # Normalization layers stay in inference mode: switching them to batch statistics would
            # change the features the stage-1 head was trained on (the Keras transfer-learning guide's advice).
            Stage("stage2", stage2_freeze, cfg.epochs, cfg.lr, cfg.backbone_lr_mult, norms_frozen=True),
        ]
    freeze = cfg.freeze if cfg.freeze is not None else default_freeze(n_units)
    return [Stage("fine-tune", freeze, cfg.epochs, cfg.lr, cfg.backbone_lr_mult)]


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "step":
        return 0.1 ** (epoch // max(1, epochs // 3))
    return 1.0


def _fit(engine: Engine, backbone: Backbone, splits: Splits, cfg: TrainConfig, reporter: Reporter, run_dir: Path,
         resuming: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Train every stage; returns the history and what the run records of its batch size."""
    stages = stages_for(cfg, len(backbone.units))
    engine.build()
    engine.say = reporter.info
    state_path = RunFiles(run_dir).state(engine.state_suffix)
    progress: dict[str, Any] = {"stage": 0, "epoch": 0, "history": [], "best": float("inf"), "waited": 0}
    if resuming:
        if not state_path.is_file():
            raise UsageError(f"{run_dir} has no resumable state ({state_path.name}); it finished or never started")
        progress = engine.peek_state(state_path)
    auto = cfg.batch_size == autobatch.AUTO
    if auto:
        if "batch_size" in progress:  # a resumed run keeps the batch it started with, wherever it resumes
            choice = autobatch.Choice(int(progress["batch_size"]), "the batch the run started with")
        else:
            choice = _auto_batch(engine, backbone, stages, splits, cfg)
        reporter.info(choice.line(cfg.lr))
        progress["batch_size"] = choice.batch_size
        cfg = dataclasses.replace(cfg, batch_size=choice.batch_size)
    scale = choice.lr_scale if auto else 1.0
    # What --compile auto weighs its compile time against, and where it says what it decided.
    per_epoch = math.ceil(len(splits.train) / max(engine.world_size, 1) / cfg.batch)
    engine.planned_steps = per_epoch * sum(stage.epochs for stage in stages)
    for s_index, stage in enumerate(stages):
        if s_index < progress["stage"]:
            continue
        frozen = backbone.freeze(stage.freeze, all_norms=stage.norms_frozen)
        engine.configure(lr=stage.lr * scale, backbone_lr_mult=stage.backbone_lr_mult, optimizer=cfg.optimizer,
                         momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)  # fmt: skip
        if resuming:
            progress = engine.load_state(state_path)
            resuming = False
            reporter.info(f"resuming {run_dir} at {stage.name} epoch {progress['epoch'] + 1}")
        reporter.info(f"{stage.name}: {frozen_text(frozen, backbone.unit_names())}, "
                      f"{engine.trainable_params():,} trainable parameters, {stage.epochs} epochs")  # fmt: skip
        _run_stage(engine, splits, cfg, reporter, run_dir, stage, s_index, progress, state_path,
                   warmup=auto and choice.warms_up)  # fmt: skip
        progress.update(stage=s_index + 1, epoch=0, waited=0)
    engine.barrier()  # rank 0 has written the best checkpoint
    engine.load_model_weights(run_dir)  # the best epoch's checkpoint, on every rank
    kept = best_epoch(progress["history"])
    if kept is not None:
        row = next(r for r in progress["history"] if r["epoch"] == kept)
        reporter.info(f"kept the best epoch: {kept} of {len(progress['history'])} (val_loss {row['val_loss']:.4f}, "
                      f"val_accuracy {row['val_accuracy']:.4f})")  # fmt: skip
    record = {"batch_size": cfg.batch, **({"batch_size_auto": choice.record()} if auto else {})}
    return list(progress["history"]), record


def _auto_batch(engine: Engine, backbone: Backbone, stages: list[Stage], splits: Splits,
                cfg: TrainConfig) -> autobatch.Choice:  # fmt: skip
    """``--batch-size auto``: measured with the last stage's units trainable (two-stage's stage 2 trains the most),
    the smallest choice over the ranks under torchrun (each measures its own device)."""
    free = engine.free_memory()
    if free is None:
        return autobatch.unmeasured(engine.on_gpu, backbone.spec.framework)
    hungriest = stages[-1]
    backbone.freeze(hungriest.freeze, all_norms=hungriest.norms_frozen)
    fixed = engine.trainable_params() * 4 * autobatch.optimizer_slots(cfg.optimizer, cfg.momentum)
    name = hungriest.name if len(stages) > 1 else ""
    mine = autobatch.choose(engine.step_memory, free, len(splits.train) // max(engine.world_size, 1),
                            fixed_bytes=fixed, stage=name)  # fmt: skip
    batches = engine.gather(mine.batch_size)
    return mine if min(batches) == mine.batch_size else autobatch.Choice(min(batches), "the smallest rank's choice")


def frozen_text(frozen: int, names: list[str]) -> str:
    """``units 1-8 of 13 frozen (features.0 ... features.17)``: what --freeze did, in words."""
    n = len(names)
    if frozen == 0:
        return f"no units frozen (all {n} train)"
    if frozen == n:
        return f"all {n} units frozen"
    span = names[0] if frozen == 1 else f"{names[0]} ... {names[frozen - 1]}"
    return f"units 1-{frozen} of {n} frozen ({span})"


def _run_stage(engine: Engine, splits: Splits, cfg: TrainConfig, reporter: Reporter, run_dir: Path, stage: Stage,
               s_index: int, progress: dict[str, Any], state_path: Path, *, warmup: bool = False) -> None:  # fmt: skip
    """The stage's epochs from ``progress``; ``warmup``: the stage's first epoch ramps the learning rate up step by
    step (``--batch-size auto``'s scaled rates)."""
    from sklearn.metrics import log_loss

    augment = cfg.augment_list()
    assert isinstance(splits.train, datamod.ImageSet) and isinstance(splits.val, datamod.ImageSet)  # decoded
    if progress["epoch"] == 0 and s_index == 0:
        how = "auto: on for the strategies that train the backbone" if cfg.augment.strip().lower() == "auto" else "--augment"
        reporter.info(f"augmentation: {', '.join(augment) or 'none'} ({how})")
    for epoch in range(progress["epoch"], stage.epochs):
        factor = _lr_factor(cfg.schedule, epoch, stage.epochs)
        engine.set_lr_factor(factor)
        t0 = time.perf_counter()
        try:
            with reporter.task(f"{stage.name} epoch {epoch + 1}/{stage.epochs}", len(splits.train)) as advance:
                if warmup and epoch == 0:
                    advance = _warming(engine, advance, factor, cfg.batch,
                                       math.ceil(len(splits.train) / max(engine.world_size, 1)))  # fmt: skip
                loss, acc = engine.train_epoch(
                    splits.train.images, splits.train.labels, batch_size=cfg.batch, augment=augment,
                    epoch=len(progress["history"]), workers=cfg.workers, progress=advance,
                )  # fmt: skip
        except KeyboardInterrupt:
            if state_path.exists():
                raise TrainingInterrupted(
                    f"interrupted during {stage.name} epoch {epoch + 1}. The last finished epoch is saved in "
                    f"{run_dir}; continue with: tlzoo train --resume {run_dir}"
                ) from None
            raise TrainingInterrupted(
                f"interrupted during {stage.name} epoch {epoch + 1}, before any epoch finished: nothing was saved"
            ) from None
        seconds = time.perf_counter() - t0
        proba = probabilities(engine.logits(splits.val.images), engine.output)
        val_loss = float(log_loss(splits.val.labels, np.clip(proba, 1e-15, 1), labels=range(len(splits.classes))))
        row = {
            "epoch": len(progress["history"]) + 1, "stage": stage.name, "loss": loss, "accuracy": acc,
            "val_loss": val_loss, "val_accuracy": float((proba.argmax(1) == splits.val.labels).mean()),
            "seconds": round(seconds, 3), "images_per_second": round(len(splits.train) / seconds, 2),
            "feed_seconds": round(engine.feed_seconds, 3),
        }  # fmt: skip
        progress["history"].append(row)
        if val_loss < progress["best"] - 1e-6:
            progress["best"], progress["waited"] = val_loss, 0
            if engine.main:
                engine.save_model(run_dir)
        else:
            progress["waited"] += 1
        progress.update(epoch=epoch + 1, stage=s_index)
        if engine.main:
            engine.save_state(state_path, progress)
        fault_point(f"epoch:{len(progress['history'])}")
        try:
            reporter.epoch(row)
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"interrupted after {stage.name} epoch {epoch + 1}; continue with: tlzoo train --resume {run_dir}"
            ) from None
        if cfg.patience and progress["waited"] >= cfg.patience:
            reporter.info(f"early stopping: validation loss has not improved for {cfg.patience} epochs")
            break


def _warming(engine: Engine, advance: Callable[[int], None], factor: float, batch: int,
             total: int) -> Callable[[int], None]:  # fmt: skip
    """``advance`` that also ramps the learning rate to ``factor`` over an epoch of ``total`` images, step by step."""
    seen = 0
    engine.set_lr_factor(factor * autobatch.warmup_factor(seen, batch, total))

    def step(n: int) -> None:
        nonlocal seen
        advance(n)
        seen += n
        engine.set_lr_factor(factor * autobatch.warmup_factor(seen, batch, total))

    return step


# ---------------------------------------------------------------- run directory files


def _peak_memory_mb() -> float | None:
    """This process's peak resident memory (the run is one process per training)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _environment(device: str, splits: Splits, *, remember: bool) -> dict[str, Any]:
    """What the run ran on; the training files' fingerprint is remembered in the cache (``remember``) by their
    paths, sizes and times, so an unchanged dataset is not read again to record it."""
    from .data_prep import fingerprint

    train = splits.train
    return {
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "device": device, "packages": package_versions(),
        "data": {"root": str(splits.root), "fingerprint_sha256": feature_cache.data_fingerprint(train)
                 if remember and isinstance(train, datamod.ImageList) else fingerprint(train),
                 "classes": len(splits.classes), "train": len(splits.train), "val": len(splits.val),
                 "test": len(splits.test) if splits.test is not None else 0},
    }  # fmt: skip


# Options that may differ when resuming: they change where the run computes, not what it computes.
RESUME_MAY_CHANGE = ("device", "workers", "threads")


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """The run's own config.yaml; ``overrides`` (options given with --resume) may only repeat it."""
    files = RunFiles(run_dir)
    path = files.config
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a tlzoo run directory (no {path.name})")
    if files.finished():
        raise UsageError(f"{run_dir} has finished training; --resume continues interrupted runs only "
                         f"(start a new run, or export this one: tlzoo export onnx {run_dir})")  # fmt: skip
    cfg = TrainConfig.load(path)
    if cfg.strategy != "feature-extract" and not any(run_dir.glob(f"{STATE_STEM}*")):
        # said before the split is read or any image decoded
        raise UsageError(f"{run_dir} has no resumable state: it was stopped before its first epoch finished. "
                         f"Start a new run (the folder holds no result)")  # fmt: skip
    notes, differing = [], []
    for key, value in overrides.items():
        saved = getattr(cfg, key, None)
        if key in RESUME_MAY_CHANGE:
            if value != saved:
                setattr(cfg, key, value)
                notes.append(f"resuming with --{key.replace('_', '-')} {value} (the run used {saved})")
        elif key == "backbone" and get_registry().resolve(str(value), cfg.framework).id == cfg.backbone:
            continue
        elif value != saved and not (key == "image_size" and value is None):
            differing.append(f"--{key.replace('_', '-')} (run: {saved}, given: {value})")
    if differing:
        raise UsageError(
            f"--resume {run_dir} continues the run with its own settings; these differ from its config.yaml: "
            f"{'; '.join(differing)}. Leave them out, or start a new run"
        )
    return cfg, notes
