"""The strategies that train the backbone: fine-tune (one stage, the first units frozen), two-stage (the head alone,
then the last units too, at a lower rate) and scratch. The stage plan, the learning-rate schedule and warm-up, the
epochs with their checkpoints and early stopping, and ``--batch-size auto``."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ..backbone import Backbone
from ..errors import TlzooError, UsageError
from ..files import fault_point
from ..heads import probabilities, proba_scores
from ..images.sets import ImageSet
from ..images.split import Splits
from ..runs.metrics import best_epoch
from ..runs.runfiles import RunFiles
from . import autobatch
from .config import TrainConfig
from .engine import Engine
from .reporter import Reporter


class TrainingInterrupted(TlzooError):
    exit_code = 130


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


def fit_stages(engine: Engine, backbone: Backbone, splits: Splits, cfg: TrainConfig, reporter: Reporter, run_dir: Path,
               resuming: bool, *, batch_given: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Train every stage; returns the history and what the run records of its batch size. On a GPU a batch
    size nobody gave is ``auto`` (sized to the device's memory: batches of 32 leave it waiting on the host)."""
    stages = stages_for(cfg, len(backbone.units))
    engine.build()
    engine.say = reporter.info
    state_path = RunFiles(run_dir).state(engine.state_suffix)
    progress: dict[str, Any] = {"stage": 0, "epoch": 0, "history": [], "best": float("inf"), "waited": 0}
    if resuming:
        if not state_path.is_file():
            raise UsageError(f"{run_dir} has no resumable state ({state_path.name}); it finished or never started")
        progress = engine.peek_state(state_path)
    # A run resumed from before this default (no batch in its state) keeps the batch it trained with.
    implicit = not batch_given and cfg.batch_size != autobatch.AUTO and engine.on_gpu \
        and (not resuming or "batch_size" in progress)  # fmt: skip
    auto = cfg.batch_size == autobatch.AUTO or implicit
    if auto:
        if "batch_size" in progress:  # a resumed run keeps the batch it started with, wherever it resumes
            choice = autobatch.Choice(int(progress["batch_size"]), "the batch the run started with")
        else:
            choice = _auto_batch(engine, backbone, stages, splits, cfg)
        reporter.info(choice.line(cfg.lr) + (" (the default on a GPU; --batch-size N fixes the batch)" if implicit else ""))
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
    record = {"batch_size": cfg.batch, "precision": engine.precision(),
              **({"batch_size_auto": choice.record()} if auto else {})}  # fmt: skip
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

    augment = cfg.augment_list()
    assert isinstance(splits.train, ImageSet) and isinstance(splits.val, ImageSet)  # decoded
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
        # validated at the training batch: a larger one would make the run's peak memory grow with the val set
        proba = probabilities(engine.logits(splits.val.images, batch_size=cfg.batch), engine.output)
        val_loss, val_accuracy = proba_scores(proba, splits.val.labels, len(splits.classes))
        row = {
            "epoch": len(progress["history"]) + 1, "stage": stage.name, "loss": loss, "accuracy": acc,
            "val_loss": val_loss, "val_accuracy": val_accuracy,
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
