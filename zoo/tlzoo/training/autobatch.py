"""``--batch-size auto``: the largest training batch that fits the GPU (Ultralytics' AutoBatch, Lightning's
batch-size finder), chosen from memory measured on the run's own model.

The training engine measures what one training step takes on the device beyond the model's weights
(activations and gradients, :meth:`tlzoo.training.engine.Engine.step_memory`) at batches of 1, 2, 4, 8 and 16,
with the run's hungriest stage's units trainable (the last stage: two-stage's stage 2). The optimizer's state
(two fp32 moments a trainable parameter for Adam and AdamW, one for SGD with momentum) is added. A line fitted
to the measurements says how the memory grows with the batch; the batch is the largest whose step fits
:data:`FRACTION` of the device's free memory, rounded down to a multiple of 8, and at most
min(training images / 8, :data:`MAX_BATCH`). Where memory cannot be measured (the CPU) the batch stays
:data:`DEFAULT`.

The learning rates scale with batch / 32 (the linear scaling rule), reached over one epoch of warm-up at the
start of each stage (:func:`warmup_factor`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError

AUTO = "auto"
DEFAULT = 32  # the batch the default learning rates are set for
FRACTION = 0.6  # Ultralytics' default: room for the allocator's fragmentation and the evaluation batches
PROBES = (2, 4, 8, 16)  # not 1: a batch of one breaks BatchNorm where the maps are 1x1 (small images)
MAX_BATCH = 1024
# feature-extract's batch on a CUDA device when --batch-size is not given: frozen inference keeps no activations
# for a backward pass, and batches of 32 leave a GPU idle between them
FEATURE_BATCH_CUDA = 256
GiB = 2**30


def feature_batch(setting: int | str, *, given: bool, cuda: bool) -> tuple[int, str | None]:
    """The batch feature-extract decodes its images and runs the frozen backbone in, and the line that says so
    when it is not the ``--batch-size`` the user gave: a number given is kept; otherwise (the default, or
    ``auto``) :data:`FEATURE_BATCH_CUDA` on a CUDA device and :data:`DEFAULT` elsewhere. The head is trained at
    the run's own batch (``auto``: :data:`DEFAULT`)."""
    if given and isinstance(setting, int):
        return setting, None
    batch = FEATURE_BATCH_CUDA if cuda else DEFAULT
    if setting == AUTO:
        return batch, (f"--batch-size auto: {batch} (feature-extract computes its features in batches of {batch}"
                       + (" on a CUDA device" if cuda else "")
                       + "; auto sizes the batches of the strategies that train the backbone)")
    if cuda:
        return batch, (f"features computed in batches of {batch} on the CUDA device (--batch-size N sets the "
                       f"batch)")  # fmt: skip
    return batch, None


def optimizer_slots(optimizer: str, momentum: float) -> int:
    """fp32 values the optimizer keeps for each trainable parameter."""
    if optimizer in ("adam", "adamw"):
        return 2
    return 1 if optimizer == "sgd" and momentum > 0 else 0


@dataclass
class Choice:
    """The batch ``--batch-size auto`` chose and on what evidence."""

    batch_size: int
    reason: str
    measured: dict[int, int] = field(default_factory=dict)  # batch -> bytes of its step
    free_bytes: int | None = None
    cap: int | None = None

    @property
    def lr_scale(self) -> float:
        return self.batch_size / DEFAULT

    @property
    def warms_up(self) -> bool:
        return self.batch_size != DEFAULT

    def record(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "lr_scale": round(self.lr_scale, 4), "reason": self.reason,
                "step_bytes": {str(b): m for b, m in self.measured.items()}, "free_bytes": self.free_bytes,
                "fraction": FRACTION, "cap": self.cap}  # fmt: skip

    def line(self, lr: float) -> str:
        scaled = (f"; learning rate {lr:g} x {self.batch_size}/{DEFAULT} = {lr * self.lr_scale:.3g}, reached over one "
                  f"epoch of warm-up" if self.warms_up else "")  # fmt: skip
        return f"--batch-size auto: {self.batch_size} ({self.reason}){scaled}"


def unmeasured(on_gpu: bool, framework: str) -> Choice:
    """The default batch, where the engine cannot measure its device's memory."""
    if on_gpu:
        return Choice(DEFAULT, f"the {framework} training engine cannot measure its GPU's memory: the default kept")
    return Choice(DEFAULT, "on the CPU there is no device memory to size it by: the default kept")


def choose(step_memory: Callable[[int], int], free_bytes: int, n_train: int, *, fixed_bytes: int = 0,
           stage: str = "") -> Choice:  # fmt: skip
    """The batch for a device with ``free_bytes`` free, from ``step_memory(batch)`` (bytes one training step
    takes; raises MemoryError when it does not fit) plus ``fixed_bytes`` (the optimizer's state)."""
    measured: dict[int, int] = {}
    for batch in PROBES:
        try:
            measured[batch] = int(step_memory(batch)) + fixed_bytes
        except MemoryError:
            break
    if not measured:
        raise UsageError(f"--batch-size auto: not even a batch of {PROBES[0]} fits the device's {free_bytes / GiB:.1f} GiB free; "
                         f"use a smaller --image-size or another device")  # fmt: skip
    # at least 8 steps an epoch, but never below the default where the data allows it (14 images: 14, not 1)
    cap = min(max(n_train // 8, min(DEFAULT, n_train), 2), MAX_BATCH)
    budget = FRACTION * free_bytes
    sizes = np.array(list(measured), dtype=np.float64)
    used = np.array(list(measured.values()), dtype=np.float64)
    slope, intercept = np.polyfit(sizes, used, 1) if len(measured) > 1 else (used[0], 0.0)
    if len(measured) < len(PROBES):  # a probe ran out of memory: the last that fitted is the most we know fits
        fits = max(measured)
        how = f"a batch of {min(set(PROBES) - set(measured))} did not fit"
    elif slope <= 0:
        fits = cap
        how = "its memory does not grow with the batch"
    else:
        fits = int((budget - intercept) // slope)
        how = (f"{slope / 2**20:.1f} MiB an image over {intercept / 2**20:.0f} MiB, measured at "
               f"{', '.join(str(b) for b in measured)}")  # fmt: skip
    batch = max(1, min(fits, cap))
    if batch >= 8:
        batch -= batch % 8
    where = f" in {stage}" if stage else ""
    limit = (f", capped at {cap} (training images / 8, not below {DEFAULT} or the training set's size, at most {MAX_BATCH})"
             if fits > cap else "")  # fmt: skip
    reason = (f"the largest training step{where} that fits {FRACTION:.0%} of the {free_bytes / GiB:.1f} GiB free: "
              f"{how}{limit}")  # fmt: skip
    return Choice(batch, reason, measured, free_bytes, cap)


def warmup_factor(seen: int, batch: int, total: int) -> float:
    """The share of the scaled learning rate the next step takes in a warm-up epoch of ``total`` images, after
    ``seen``: a straight ramp to 1 at the epoch's last step."""
    return min(1.0, (seen + batch) / max(total, 1))
