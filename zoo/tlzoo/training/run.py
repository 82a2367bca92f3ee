"""``tlzoo train``: every strategy, for torch and Keras backbones, into a run directory.

A run checks its settings and the backbone's units, plans the split on the files, decodes the images (the
strategies that train the backbone), then either extracts features and fits a head (:mod:`.features`) or trains
the stages (:mod:`.stages`), and writes the run directory: the model, metrics, history, plots and model card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import calibration
from ..balance import Balance, balanced_weights, decide as decide_balance
from ..adapters import adapter_for
from ..backbone import check_input_size
from ..distributed import world
from ..errors import UsageError
from ..files import reclaim_temp_files
from ..freeze import parse_freeze, parse_unit
from ..heads import probabilities
from ..images import decoders
from ..images.folders import shown
from ..images.split import Splits, decode, plan
from ..limits import check as check_limits
from ..registry import get_registry
from ..runs import model_card
from ..runs.metrics import best_epoch, classification_metrics, plot_confusion, plot_history, plot_per_label
from ..runs.rundir import new_run_dir
from ..runs.runfiles import (CONFUSION_MATRIX, ENVIRONMENT, FORMAT_VERSION, FULL_MODEL_FORMAT, HEAD, LEARNING_CURVES, METRICS,
                             MULTILABEL_FORMAT, PER_LABEL, RELIABILITY, REPORT, ClassifierMeta, RunFiles)  # fmt: skip
from ..specs import BackboneSpec
from ..version import __version__
from ..weights import preflight as preflight_weights, published as published_weights
from . import autobatch, confidence
from .config import TrainConfig
from .engine import Collective, Engine
from .features import extract_and_fit
from .model import Model
from .record import environment, job_record, peak_memory_mb
from .reporter import Reporter
from .resume import recorded_splits, resume_config
from .stages import TrainingInterrupted, fit_stages, stages_for

__all__ = ["TrainResult", "TrainingInterrupted", "train"]


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
    from ..images.locks import release_leases

    check_limits()  # TLZOO_STORE_MAX_GB, TLZOO_MAX_IMAGE_PIXELS: refused in one line before any work

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
    if resume is not None:
        splits = recorded_splits(Path(resume), config.data)
    else:
        splits = plan(config.sources(), reporter, config.reading())
    if splits.multilabel:
        config = _for_multilabel(config, given, reporter)
    elif config.threshold is not None:
        raise UsageError("--threshold is for multi-label data (a CSV with a 'labels' column, or one-hot columns); a "
                         "single-label model predicts its top class")  # fmt: skip
    feature_extract = config.strategy == "feature-extract"
    model = Model(spec, config, size, len(splits.classes))
    if config.decoder == "gpu":
        model.decoder  # refused now where there is none, not at the first image
    if not feature_extract:
        splits = decode(splits, size, config.reading(), reporter, model.preprocessing, model.decoder_for(reporter))
        splits.warn_skipped(reporter)
    splits.show_counts(reporter)
    balanced = decide_balance(config.balance, splits.train.labels, len(splits.classes))
    if not feature_extract and splits.multilabel and not model.engine.can_multilabel:
        raise UsageError(f"{spec.id}: the {spec.framework} engine cannot train on several labels an image; use "
                         f"--strategy feature-extract, or a single-label CSV")  # fmt: skip
    if not feature_extract and balanced.mode != "none" and not model.engine.can_balance:
        if config.balance != "auto":
            raise UsageError(f"--balance {config.balance}: the {spec.framework} engine cannot weigh its loss or draw "
                             f"its batches by class; use --balance none")  # fmt: skip
        balanced = dataclasses.replace(balanced, mode="none", weights=[])
    said = balanced.line(list(splits.train.counts().values()))
    if said is not None:
        (reporter.warn if said[1] else reporter.info)(said[0])
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
                         batch_given="batch_size" in given, balanced=balanced)  # fmt: skip
    except BaseException:
        if created and comm.main:
            _discard_unstarted(run_dir, model, None if out_dir_existed else Path(config.out_dir))
        raise
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()


def _for_multilabel(config: TrainConfig, given: Collection[str], reporter: Reporter) -> TrainConfig:
    """A multi-label set's head: one logistic regression per label (or the MLP); softmax and the SVM give one
    class an image, refused when asked for and replaced when they were only the default."""
    if config.strategy != "feature-extract" or config.head not in ("softmax", "linear-svm"):
        return config
    if "head" in given:
        raise UsageError(f"--head {config.head} gives each image one class, and this data has several labels an "
                         f"image: use --head logreg-ovr (one logistic regression per label) or mlp")  # fmt: skip
    reporter.info("several labels an image: the head is logreg-ovr, one logistic regression per label")
    return dataclasses.replace(config, head="logreg-ovr")


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
              unused: list[str], *, batch_given: bool = True, balanced: Balance | None = None) -> TrainResult:  # fmt: skip
    balanced = balanced or decide_balance("none", splits.train.labels, len(splits.classes))
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
        cuda = model.device.startswith("cuda") if model.has_engine else decoders.may_be_cuda(config.device)
        extract_batch, why = autobatch.feature_batch(config.batch_size, given=batch_given, cuda=cuda)
        if why:
            reporter.info(why)
        if config.batch_size == autobatch.AUTO:
            config = dataclasses.replace(config, batch_size=autobatch.DEFAULT)
        splits, history, head, eval_features, extra, fitted = extract_and_fit(model, splits, config, reporter, comm,
                                                                               extract_batch, balanced)  # fmt: skip
        if comm.main:
            files.write_split(splits.rows(), multilabel=splits.multilabel)  # the readable images: known once every part was read
        eval_proba = probabilities(head.logits(eval_features), head.output)
        output, trainable, head_meta = head.output, sum(w.size + b.size for w, b in zip(head.weights, head.biases)), \
            {"sizes": head.sizes, "dropout": head.dropout}
        frozen = units
    else:
        engine = model.engine
        engine.set_compile(config.compile)
        if config.calibrate == "on" and not engine.can_scale_logits:
            raise UsageError(f"--calibrate on: the {spec.framework} engine cannot fold a temperature into its model; "
                             f"use --calibrate off")  # fmt: skip
        if resume is None and comm.main:
            files.write_split(splits.rows(), splits.digests, multilabel=splits.multilabel)
        loss_weights = balanced_weights(splits.train.labels, len(splits.classes)) if balanced.mode == "weights" else None
        if splits.multilabel:
            engine.set_multilabel(loss_weights)
        else:
            engine.set_balance(balanced.mode, loss_weights)
        history, batch = fit_stages(engine, model.backbone, splits, config, reporter, run_dir, resume is not None,
                                    batch_given=batch_given)  # fmt: skip
        extra = {"compile": engine.compile_record(), "images_decoded": int(sum(comm.gather(splits.decoded))), **batch}
        if engine.compile_note:
            reporter.warn(f"--compile {config.compile}: {engine.compile_note}")
        # in batches from the store, at the training batch: memory does not grow with the evaluation split
        eval_logits = engine.logits(splits.eval_set.images, batch_size=batch["batch_size"])  # type: ignore[union-attr]
        val_logits = eval_logits if splits.eval_name == "val" else \
            engine.logits(splits.val.images, batch_size=batch["batch_size"])  # type: ignore[union-attr]  # fmt: skip
        choice = config.calibrate if engine.can_scale_logits else "off"
        fitted = confidence.fit(choice, val_logits, splits.val.labels, engine.output, eval_logits,
                                splits.eval_set.labels, splits.eval_name, splits.classes, config.threshold)  # fmt: skip
        for line in fitted.lines:
            reporter.info(line)
        if fitted.changes:
            engine.scale_logits(fitted.factor, fitted.shift)  # folded into the model: every later use is calibrated
        extra.update(fitted.record)
        eval_proba = fitted.proba(eval_logits, engine.output)
        output, trainable, head_meta, frozen = engine.output, engine.trainable_params(), engine.head_meta(), \
            model.backbone.frozen_units
    head_only = model.head_only
    if comm.main:
        if head_only:
            files.write_head(head)
        else:
            model.engine.save_model(run_dir)
    train_seconds = time.perf_counter() - started
    job = job_record(comm, len(splits.train)) if isinstance(comm, Engine) else {}  # collective: every rank takes part

    thresholds = fitted.thresholds
    metrics = classification_metrics(splits.eval_set.labels, eval_proba, splits.classes, thresholds)
    metrics.update(balance=balanced.record())
    metrics.update(split=splits.eval_name, train_seconds=round(train_seconds, 3), peak_memory_mb=peak_memory_mb(),
                   trainable_params=int(trainable), frozen_units=frozen, units=units,
                   best_epoch=best_epoch(history) if len(history) > 1 else None, **extra)  # fmt: skip
    meta = ClassifierMeta(
        framework=spec.framework, backbone=spec.id, input_size=size, tap=tap, head=head_meta, output=output,
        classes=splits.classes, preprocessing=model.preprocessing, weights=weights.tag if weights else None,
        strategy=config.strategy, model_file=HEAD if head_only else adapter_for(spec.framework).model_file,
        plugin=get_registry().provider(spec.id), tlzoo_version=__version__,
        weights_sha256=model.weights_sha256 if head_only else None,
        format_version=MULTILABEL_FORMAT if splits.multilabel else FORMAT_VERSION if head_only else FULL_MODEL_FORMAT,
        thresholds=[round(float(t), 6) for t in thresholds] if thresholds is not None else None,
    )  # fmt: skip
    if comm.main:  # under torchrun, rank 0 alone writes the run's files
        files.write_meta(meta)
        files.write_json(METRICS, metrics)
        files.write_history(history)
        files.write_json(ENVIRONMENT, {**environment(model.device, splits, remember=config.cache), **job})
        files.write_json(REPORT, {"skipped_images": [{"path": shown(p), "error": e} for p, e in splits.skipped]})
        plot_history(history, files / LEARNING_CURVES, f"{spec.id} {config.strategy}")
        counts = {name: part.counts() for name, part in splits.parts()}
        model_card.write(run_dir, config=resolved.to_dict(), spec=spec, weights=weights, metrics=metrics,
                         counts=counts, skipped=len(splits.skipped), unused=unused,
                         images={name: len(part) for name, part in splits.parts()})  # fmt: skip
        title = f"{spec.id} {config.strategy} ({splits.eval_name}"
        if splits.multilabel:
            plot_per_label(metrics["per_label"], files / PER_LABEL, f"{title}, mAP {metrics['mean_average_precision']:.3f})")
        else:
            plot_confusion(metrics["confusion_matrix"], splits.classes, files / CONFUSION_MATRIX,
                           f"{title}, acc {metrics['accuracy']:.3f})")  # fmt: skip
        tables = metrics["reliability"]
        how = "Platt scaling" if splits.multilabel else f"temperature {metrics.get('temperature', 1.0):.2f}"
        calibration.plot_reliability(tables["before"], tables.get("after"), files / RELIABILITY,
                                     f"{title}): {'mean ' if splits.multilabel else ''}ECE "
                                     + (f"{metrics['ece_before_calibration']:.3f} -> {metrics['ece']:.3f}, {how}"
                                        if "after" in tables else f"{metrics['ece']:.3f}, not calibrated"),
                                     per_label=splits.multilabel)  # fmt: skip
        if model.has_engine:
            files.state(model.engine.state_suffix).unlink(missing_ok=True)
    comm.barrier()
    summary = {
        "run_dir": str(run_dir), "backbone": spec.id, "strategy": config.strategy,
        "split": splits.eval_name, "accuracy": metrics["accuracy"], "log_loss": metrics["log_loss"],
        "macro_f1": metrics["macro_f1"], "train_seconds": metrics["train_seconds"], "epochs": len(history),
        **({"mean_average_precision": metrics["mean_average_precision"], "micro_f1": metrics["micro_f1"]}
           if splits.multilabel else {}),
        "frozen_units": frozen, "units": units, "unused_options": unused,
        **{k: v for k, v in extra.items() if k != "reliability"},
    }  # fmt: skip
    return TrainResult(run_dir=run_dir, metrics=metrics, history=history, summary=summary)
