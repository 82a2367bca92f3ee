"""Feature extraction: the frozen backbone's features of every part (from the feature cache, or decoded, through the
store, and computed by the engine auto picks), then a head fitted on them (scikit-learn's linear heads with C chosen
on validation data, or the framework's MLP)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import engine_memory, feature_engines
from ..adapters import adapter_for
from ..balance import Balance, balanced_weights, sampled_order
from ..errors import DataError, UsageError
from ..heads import C_GRID, HeadParams, choose_c, fit_linear, fit_mlp, head_scores, scaled
from ..images import batches, decoders, store
from ..images.decode import ImageDecoder, fits_limit_now
from ..images.sets import ImageList
from ..images.split import Splits, readable
from ..specs import BackboneSpec
from . import cache as feature_cache, confidence
from .config import TrainConfig
from .engine import Collective
from .model import Model
from .reporter import Reporter


def _features(model: Model, key: dict[str, Any], part: ImageList, cfg: TrainConfig, reporter: Reporter,
              what: str, comm: Collective, run: Callable[[], Any], decoded: list[int]) -> tuple[feature_cache.Entry, bool]:  # fmt: skip
    """The features of ``part``'s readable images: from the cache (found by the files, nothing decoded), or
    decoded and extracted a batch at a time."""
    slot = feature_cache.Slot(key, part)
    if cfg.cache:
        entry = slot.load()
        if entry is not None and any(fits_limit_now(why) for _, why in entry.skipped):
            reporter.info(f"{what} features computed again: an image the cache skipped as too large fits "
                          f"TLZOO_MAX_IMAGE_PIXELS now")  # fmt: skip
            entry = None
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
    stream = store.Stream(feature_cache.cache_root().parent, model.size, model.preprocessing, decoder) \
        if cfg.cache and not store.disabled() else None
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


def _extract(model: Model, files: ImageList, cfg: TrainConfig, run: Callable[[], Any],
             advance: Callable[[int], None], stream: store.Stream | None,
             decoder: ImageDecoder | None) -> feature_cache.Entry:  # fmt: skip
    """Decode (or read from the store) on a pool of threads while the runner works on the batch before. The
    runner is given the batch itself (a reopened engine has no backbone built to go through)."""
    from ..images.normalize import normalize

    feats, kept, skipped = [], [], []
    kept_by = (lambda path, jpeg, pixels: stream.add(path, jpeg.digest, pixels)) if stream is not None else None
    own = cfg.feature_engine in (feature_engines.FRAMEWORK, feature_engines.AUTO)
    # A runner may give features still on their way from the device (``ready()``, read by ``np.asarray``):
    # they are taken in order once done, never waited for while batches remain, so the device is never idle.
    waiting: deque[Any] = deque()

    def take(wait: bool) -> None:
        while waiting and (wait or getattr(waiting[0], "ready", lambda: True)()):
            feats.append(np.asarray(waiting.popleft(), dtype=np.float32))

    def stacked_into(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Where a batch is stacked: pinned memory for the framework's engine on a GPU (made by ``run()``,
        which a remembered engine reopened without the framework never builds), plain memory otherwise."""
        run()
        return model.pinned(shape, dtype) if model.has_engine else np.empty(shape, dtype)

    for batch in batches.decode_batches(files.paths, model.size, batch_size=cfg.batch, threads=cfg.workers or None,
                                        strict=cfg.strict, prep=model.preprocessing, decoder=decoder,
                                        load=stream.load if stream is not None else None, decoded=kept_by,
                                        allocate=stacked_into if own else None,
                                        on_device=own and decoder is not None):  # fmt: skip
        skipped += batch.skipped
        if len(batch.index):
            runner = run()
            images = batch.images
            if not isinstance(images, np.ndarray) and not getattr(runner, "takes_device_batches", False):
                images = decoder.host_batch(images)  # type: ignore[union-attr]  # an engine that reads host arrays
            # the same normalization as Backbone.preprocess, for a runner that does not take uint8 batches
            images = images if getattr(runner, "takes_uint8", False) else normalize(images, model.spec.preprocessing)
            waiting.append(runner(images))
            kept.append(batch.index)
            take(wait=False)
        advance(len(batch.index) + len(batch.skipped))
    take(wait=True)
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


def extract_and_fit(model: Model, splits: Splits, head_cfg: TrainConfig, reporter: Reporter, comm: Collective,
                     extract_batch: int, balanced: Balance) -> tuple[Splits, list[dict[str, Any]], HeadParams, np.ndarray, dict[str, Any], confidence.Confidence]:  # fmt: skip
    """Features of every part (cached or extracted, in batches of ``extract_batch``), then the head on them (at
    ``head_cfg``'s batch). Returns the splits without their unreadable images, the history, the head, the
    evaluation split's features, what the run records and the calibration (with a multi-label run's thresholds)."""
    t0 = time.perf_counter()
    cfg = dataclasses.replace(head_cfg, batch_size=extract_batch)
    off = store.disabled() if cfg.cache else None
    if off and comm.main:
        reporter.info(f"{off}: features are computed from images decoded in memory")
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
    key = model.feature_key(decoders.predicted(cfg.decoder, cfg.device, model.gpu_decoder))
    hits, feats, kept, skipped = {}, {}, {}, {}
    decoded = [0]  # images this rank decoded (the feature cache and the pixel store spare the rest)
    for i, (name, part) in enumerate(parts):
        assert isinstance(part, ImageList)
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
    head, history = comm.broadcast(_fit_head(feats, splits, head_cfg, reporter, model.spec, n, balanced)
                                   if comm.main else None)  # fmt: skip
    head_seconds = time.perf_counter() - t1
    fitted = confidence.fit(cfg.calibrate, head.logits(feats["val"]), splits.val.labels, head.output,
                            head.logits(feats[splits.eval_name]), splits.eval_set.labels, splits.eval_name,
                            splits.classes, cfg.threshold)  # fmt: skip
    if comm.main:
        for line in fitted.lines:
            reporter.info(line)
    head = scaled(head, fitted.factor, fitted.shift)  # folded into the head: every later use is calibrated
    if not model.head_only:
        model.engine.build(head)
    extra = {
        "feature_cache": "hit" if all(hits.values()) else ("partial" if any(hits.values()) else "miss"),
        "feature_seconds": round(feature_seconds, 3), "head_seconds": round(head_seconds, 3), "head": cfg.head,
        "feature_batch": extract_batch,
        "images_decoded": int(sum(comm.gather(decoded[0]))),
        "feature_engine": choice.engine if choice is not None else cfg.feature_engine,
        **({"feature_engine_auto": choice.record()} if choice is not None else {}),
        **fitted.record,
    }  # fmt: skip
    return splits, history, head, feats[splits.eval_name], extra, fitted


def _fit_head(feats: dict[str, np.ndarray], splits: Splits, cfg: TrainConfig, reporter: Reporter, spec: BackboneSpec,
              n: int, balanced: Balance) -> tuple[HeadParams, list[dict[str, Any]]]:  # fmt: skip
    """The head on the cached features: once, on rank 0 under torchrun. ``balanced``: ``--balance``'s decision
    (the class weights for ``weights``; ``sampler`` draws the MLP's training features class-balanced)."""
    # weighed by the readable training images' counts (the decision was made on the planned split's)
    weight = balanced_weights(splits.train.labels, n) if balanced.mode == "weights" else None
    if cfg.head == "mlp":
        x, y = feats["train"], splits.train.labels
        trainer = adapter_for(spec.framework).train_mlp
        # sampler: each epoch a class-balanced draw with replacement, as many as there are (drawn from the seed
        # and the epoch alone, so a rerun draws the same); a trainer that takes no epoch_order gets one such draw
        epoch_order = (lambda epoch: sampled_order(y, np.random.default_rng([cfg.seed, epoch, 0xBA]), n)) \
            if balanced.mode == "sampler" else None  # fmt: skip
        if epoch_order is not None and not _takes(trainer, "epoch_order"):
            reporter.info(f"--balance sampler: the {spec.framework} framework's MLP trainer takes no epoch_order, so "
                          f"its training features are drawn class-balanced once, not again each epoch")  # fmt: skip
            drawn = epoch_order(0)
            x, y, epoch_order = x[drawn], y[drawn], None
        # what the trainer is asked for beyond the adapter contract's first version, refused before it trains
        if splits.multilabel and not _takes(trainer, "multilabel"):
            raise UsageError(f"the {spec.framework} framework's MLP trainer cannot train multi-label (it takes no "
                             f"multilabel=); use --head logreg-ovr")  # fmt: skip
        if weight is not None and not _takes(trainer, "pos_weight" if splits.multilabel else "class_weight"):
            raise UsageError(f"--balance {balanced.choice}: the {spec.framework} framework's MLP trainer takes no class "
                             f"weights; use --balance none (or sampler)")  # fmt: skip
        head = fit_mlp(
            x, y, feats["val"], splits.val.labels, n, hidden=cfg.hidden,
            dropout=cfg.dropout, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
            patience=cfg.patience, batch_size=cfg.batch, seed=cfg.seed, trainer=trainer,
            on_epoch=reporter.epoch, class_weight=weight, epoch_order=epoch_order,
        )  # fmt: skip
        history = head.history
    else:
        if cfg.c is not None:
            c, head = cfg.c, fit_linear(cfg.head, feats["train"], splits.train.labels, n, c=cfg.c, seed=cfg.seed,
                                        class_weight=weight)  # fmt: skip
        else:
            c, head = _choose_c(cfg.head, feats, splits, reporter, cfg.seed, weight)
        history = [{**_row(1, "head", head, feats, splits), "C": c}]
        reporter.epoch(history[0])
    return head, history


def _takes(function: Callable[..., Any], keyword: str) -> bool:
    """Whether ``function`` accepts ``keyword`` (by name, or through ``**kwargs``)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return keyword in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _choose_c(kind: str, feats: dict[str, np.ndarray], splits: Splits, reporter: Reporter,
              seed: int, class_weight: np.ndarray | None = None) -> tuple[float, HeadParams]:  # fmt: skip
    """The regularization that does best on the validation data (see :func:`tlzoo.heads.choose_c`), and
    the head fitted with it: the path over C is warm-started and the winner is kept, not refitted."""
    c, head, scores = choose_c(kind, feats["train"], splits.train.labels, feats["val"], splits.val.labels,
                               len(splits.classes), C_GRID, seed=seed, class_weight=class_weight)  # fmt: skip
    reporter.info("--C chosen on validation data: " + ", ".join(f"C={value:g} acc {acc:.4f} log loss {loss:.3f}"
                                                                for value, acc, loss in scores)
                  + f" -> C={c:g} ({'best accuracy' if kind == 'linear-svm' else 'lowest log loss'})")  # fmt: skip
    return c, head


def _row(epoch: int, stage: str, head: HeadParams, feats: dict[str, np.ndarray], splits: Splits) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, "stage": stage}
    for prefix, name, part in (("", "train", splits.train), ("val_", "val", splits.val)):
        row[prefix + "loss"], row[prefix + "accuracy"] = head_scores(head, feats[name], part.labels, len(splits.classes))
    return row
