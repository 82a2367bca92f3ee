"""What a framework must provide to train a classifier: the contract the training loop uses."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..backbone import Backbone
from ..errors import TrainingDiverged, one_line
from ..heads import HeadParams

ProgressFn = Callable[[int], None]

# Steps between looks at an epoch's loss, summed on the device, for a non-finite value: reading it every step
# would wait for the device every step.
CHECK_EVERY = 50


def check_finite(total: Any, seen: int) -> None:
    """Raise :class:`TrainingDiverged` when an epoch's summed loss (a framework's scalar tensor on its device)
    is not finite: the one read of it that waits for the device."""
    value = float(total)
    if not math.isfinite(value):
        raise TrainingDiverged(value / max(seen, 1))


class Collective:
    """What the processes of one run do together. One process by default: data-parallel engines override
    these; a run that never builds its engine (every feature cached) uses this class as it is."""

    rank = 0
    world_size = 1

    @property
    def main(self) -> bool:
        """Rank 0 (or the only process): the one that prints and writes."""
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        return value

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        return [value]

    def barrier(self) -> None:
        """Wait until every rank gets here."""


class Engine(Collective, ABC):
    """A classifier (backbone features + head) in one framework, and how to train it."""

    def __init__(self, backbone: Backbone, n_classes: int, *, tap: int | None, dropout: float, seed: int,
                 device: str = "auto") -> None:  # fmt: skip
        self.backbone = backbone
        self.n_classes = n_classes
        self.tap = tap
        self.dropout = dropout
        self.seed = seed
        self.device_request = device
        self.output = "softmax"
        self.rank = 0  # set by start_distributed
        self.world_size = 1
        self.job_info: dict[str, Any] = {}  # what the run records about its ranks or replicas
        self.compile_mode = "auto"
        self.compile_note = ""  # why a compiled training step was given up
        self.compile_decision: Any = None  # --compile auto's tlzoo.training.compile_payoff.Decision, once made
        self.planned_steps = 0  # the run's training steps, all stages (for auto's eager estimate)
        self.say: Callable[[str], None] = lambda line: None  # a line for the user (the run's reporter)

    feed_seconds = 0.0  # how long the last train_epoch waited for its batches (the feed's stall; 0: not measured)
    can_compile = False  # whether this engine can compile its training step (--compile)
    decides_by_payoff = False  # --compile auto on a GPU: decided by tlzoo.training.compile_payoff (else: compile)

    def set_compile(self, mode: str) -> None:
        """``--compile``: ``auto`` (compile the training step on a GPU, where it pays), ``on`` or ``off``. An
        engine that cannot compile refuses ``on``."""
        if mode == "on" and not self.can_compile:
            from ..errors import UsageError

            raise UsageError(f"--compile on: the {self.backbone.spec.framework} training engine cannot compile its "
                             f"training step; use --compile auto or off")  # fmt: skip
        self.compile_mode = mode

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith(("cuda", "gpu"))

    @property
    def _auto_by_payoff(self) -> bool:
        return self.compile_mode == "auto" and self.on_gpu and self.decides_by_payoff

    @property
    def compiles(self) -> bool:
        """Whether the training step is compiled (or will be, at its next batch)."""
        if self._auto_by_payoff:
            wanted = self.compile_decision is not None and self.compile_decision.compile
        else:
            wanted = self.compile_mode == "on" or (self.compile_mode == "auto" and self.on_gpu)
        return self.can_compile and wanted and not self.compile_note

    @property
    def probes_compile(self) -> bool:
        """Whether ``--compile auto`` has still to decide (it times the first steps, then asks :meth:`decide_compile`)."""
        return self._auto_by_payoff and self.can_compile and self.compile_decision is None and not self.compile_note

    def compile_key(self, batch_size: int) -> str:
        """What a compile time is recorded under: model, input shape, batch, device and framework versions."""
        from .compile_payoff import record_key

        return record_key(self.backbone.spec.id, self.backbone.input_size, batch_size, self.device_name(),
                          self.framework_version())  # fmt: skip

    #: whether :meth:`set_balance` is honoured (``--balance weights|sampler`` on the strategies that train a network)
    can_balance = False
    balance_mode = "none"
    class_weights: np.ndarray | None = None

    def set_balance(self, mode: str, class_weights: np.ndarray | None) -> None:
        """``--balance``: ``weights`` weighs the training loss by ``class_weights`` (one per class); ``sampler``
        draws each epoch's order class-balanced with replacement (:meth:`epoch_order`); ``none`` neither."""
        self.balance_mode, self.class_weights = mode, class_weights

    def sampled(self, labels: np.ndarray, order: Any, epoch: int, window: int | None = None) -> np.ndarray:
        """Under ``sampler``, the epoch's order (this rank's share under DDP) drawn again class-balanced, with
        replacement: from all of it, or within each run of ``window`` positions of a quasi-random order (the
        store's pages are still read a few blocks at a time); otherwise ``order`` as it is."""
        order = np.asarray(order, np.int64)
        if self.balance_mode != "sampler":
            return order
        from ..balance import sampled_order

        rng = np.random.default_rng([self.seed, epoch, self.rank, 0xBA])
        span = window or max(len(order), 1)
        parts = [order[i : i + span] for i in range(0, len(order), span)]
        return np.concatenate([part[sampled_order(labels[part], rng, self.n_classes)] for part in parts]) \
            if parts else order  # fmt: skip

    #: whether :meth:`set_multilabel` is honoured (a multi-label set: a 0/1 matrix of labels, sigmoid outputs)
    can_multilabel = False
    multilabel = False
    pos_weight: np.ndarray | None = None

    def set_multilabel(self, pos_weight: np.ndarray | None) -> None:
        """Train on a multi-label set: ``train_epoch``'s labels are a 0/1 matrix (images x labels), the loss
        binary cross-entropy on each label's logit, each label's positives weighed by ``pos_weight`` (None: 1),
        the reported accuracy that of (image, label) pairs at 0.5; :attr:`output` becomes ``sigmoid``."""
        self.multilabel, self.pos_weight, self.output = True, pos_weight, "sigmoid"

    #: whether :meth:`scale_logits` folds a factor into the model (what ``--calibrate`` needs)
    can_scale_logits = False

    def scale_logits(self, factor: float | np.ndarray, shift: float | np.ndarray = 0.0) -> None:
        """Multiply the model's logits by ``factor`` and add ``shift`` for good (its last layer's weights and
        bias; each a number or one per output): a temperature T folded into the model is ``factor = 1 / T``,
        Platt scaling ``factor = a, shift = b``."""
        raise NotImplementedError(f"{type(self).__name__} cannot scale its logits")

    def precision(self) -> str:
        """What the training steps compute in, for the run's record (``float32`` unless the engine says)."""
        return "float32"

    def device_name(self) -> str:
        return self.device

    def framework_version(self) -> str:
        return ""

    def decide_compile(self, step_seconds: float, steps_done: int, batch_size: int) -> bool:
        """``--compile auto``'s decision from the eager step time; says it, and returns whether to compile."""
        from .cache import cache_root
        from .compile_payoff import decide, recorded

        left = max(self.planned_steps - steps_done, 0)
        # Rank 0's decision on every rank: the ranks of a data-parallel job train the same way.
        self.compile_decision = self.broadcast(decide(recorded(cache_root().parent, self.compile_key(batch_size)),
                                                      step_seconds * left))  # fmt: skip
        self.say(f"--compile auto: {self.compile_decision.why}")
        return self.compiles

    def compile_failed(self, exc: BaseException) -> None:
        """The first compiled step failed: under ``--compile on`` that is the user's error, one line; under
        ``auto`` training goes on uncompiled and the run records why."""
        from ..errors import UsageError

        why = f"{type(exc).__name__}: {one_line(exc)}"
        if self.compile_mode == "on":
            raise UsageError(f"--compile on: compiling the training step failed here ({why}); use --compile off") from exc
        self.compile_note = f"compiling failed, trained uncompiled ({why})"

    def compile_record(self) -> dict[str, Any]:
        from .compile_payoff import PROBE_STEPS

        why = self.compile_decision.why if self.compile_decision is not None else None
        if self.probes_compile:  # auto never got to decide
            why = f"the run ended within the {PROBE_STEPS} eager steps auto times before deciding: eager"
        return {"asked": self.compile_mode, "compiled": self.compiles, **({"why": why} if why else {}),
                **({"note": self.compile_note} if self.compile_note else {})}  # fmt: skip

    @property
    @abstractmethod
    def device(self) -> str: ...

    @abstractmethod
    def build(self, head: HeadParams | None = None) -> None:
        """Assemble the classifier; a fresh Dropout+Dense head when ``head`` is None."""

    @abstractmethod
    def configure(self, *, lr: float, backbone_lr_mult: float, optimizer: str, momentum: float, nesterov: bool,
                  weight_decay: float) -> None:  # fmt: skip
        """Make optimizers for the trainable parameters: head at ``lr``, backbone at ``lr * backbone_lr_mult``."""

    @abstractmethod
    def set_lr_factor(self, factor: float) -> None: ...

    def free_memory(self) -> int | None:
        """Bytes the training device has free for ``--batch-size auto`` (what the framework's allocator holds
        unused counts as free); None where it cannot say (the CPU), and the batch stays 32."""
        return None

    def step_memory(self, batch_size: int) -> int:
        """Bytes one training step on a batch of ``batch_size`` takes on the device beyond the weights (activations
        and gradients; not the optimizer's state), measured without changing the model, its optimizer or the
        random generators. Raises MemoryError when the step does not fit. Needed where :meth:`free_memory` is not None."""
        raise NotImplementedError

    @abstractmethod
    def train_epoch(self, images: np.ndarray, labels: np.ndarray, *, batch_size: int, augment: list[str],
                    epoch: int, workers: int, progress: ProgressFn | None) -> tuple[float, float]:  # fmt: skip
        """One pass over the data; returns (mean loss, accuracy)."""

    @abstractmethod
    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Inference-mode logits for RGB uint8 images at input size."""

    @abstractmethod
    def save_model(self, run_dir: Path) -> Path:
        """Write the classifier checkpoint (framework's safe format) atomically; return its path."""

    @abstractmethod
    def save_state(self, path: Path, extra: dict[str, Any]) -> None:
        """Write a resumable training state (weights, optimizer, ``extra``) atomically."""

    @abstractmethod
    def load_state(self, path: Path) -> dict[str, Any]:
        """Restore weights and optimizer from :meth:`save_state`; return its ``extra``."""

    @abstractmethod
    def peek_state(self, path: Path) -> dict[str, Any]:
        """Only the ``extra`` of a saved state (which stage and epoch it reached)."""

    @abstractmethod
    def load_model_weights(self, run_dir: Path) -> None:
        """Load the checkpoint :meth:`save_model` wrote (the best epoch) into the classifier."""

    @property
    @abstractmethod
    def state_suffix(self) -> str: ...

    @abstractmethod
    def trainable_params(self) -> int:
        """How many of the classifier's parameters the optimizer updates now."""

    def head_meta(self) -> dict[str, Any]:
        """The head's shape as the run directory records it: ``sizes`` (None when the framework's checkpoint
        holds the whole model) and ``dropout``."""
        return {"sizes": None, "dropout": self.dropout}

    # ------------------------------------------------ data-parallel training (one process by default)

    def start_distributed(self, world: Any) -> None:
        """Join the job's process group (``world`` from :func:`tlzoo.distributed.world`) and fill ``job_info``.
        Engines that cannot train across processes refuse."""
        from ..errors import UsageError

        raise UsageError(
            f"{self.backbone.spec.id}: data-parallel training across processes (torchrun) is available for torch "
            f"backbones; run this one as a single process"
        )

    def model_digest(self) -> str:
        """sha256 over the classifier's weights: equal on every rank when data-parallel training kept them in sync."""
        return ""

    def last_epoch_indices(self) -> list[int]:
        """The training-set indices this rank saw in its last epoch."""
        return []

    def set_rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def quasi_random_order(self, images: Any, epoch: int) -> np.ndarray | None:
        """This rank's order of ``images`` for ``epoch`` when they are a decoded-pixel store larger than the memory
        that could cache it (:mod:`tlzoo.images.order`; decided at the first epoch, and said), else None: the
        engine shuffles as it always does."""
        from ..images import order

        if not hasattr(self, "_quasi_plan"):
            self._quasi_plan = order.plan(images)
            if self._quasi_plan:
                self.say(self._quasi_plan)
        if not self._quasi_plan:
            return None
        everyone = order.epoch_order(images, self.seed, epoch)
        return order.shard(everyone, self.rank, self.world_size) if self.world_size > 1 else everyone

    def epoch_positions(self, images: Any, labels: np.ndarray, shuffled: Any, epoch: int) -> np.ndarray:
        """The positions this rank visits in ``epoch``: the quasi-random order for a store larger than memory,
        else ``shuffled`` (the engine's own shuffle), drawn again class-balanced under ``--balance sampler``."""
        from ..images import order

        quasi = self.quasi_random_order(images, epoch)
        if quasi is None:
            return self.sampled(labels, shuffled, epoch)
        return self.sampled(labels, quasi, epoch, window=order.window(images))

    def epoch_seed(self, epoch: int) -> int:
        """A seed for everything random in one epoch, derived from the run's seed and the epoch alone."""
        return int(np.random.SeedSequence([self.seed, epoch, 0x7E]).generate_state(1)[0])

    def seed_epoch(self, epoch: int) -> None:
        """Seed Python's and numpy's global generators for this epoch (frameworks seed their own)."""
        import random

        random.seed(self.epoch_seed(epoch))
        np.random.seed(self.epoch_seed(epoch))
