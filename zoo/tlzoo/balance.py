"""Imbalanced classes: ``--balance auto|none|weights|sampler``.

- ``weights``: the loss weighted by class with scikit-learn's "balanced" weights, n / (K * n_c), so that every
  class weighs as much in total; the same numbers for torch's and Keras' losses and for the scikit-learn heads
  (their ``class_weight``).
- ``sampler``: every epoch draws as many images as the training split holds, with replacement, each class
  equally likely (an image of class c with probability 1 / (K * n_c)); under DDP each rank takes its share of
  that draw. The scikit-learn heads fit on all the features at once and refuse it.
- ``auto`` (the default): ``weights`` when the largest class has at least :data:`AUTO_RATIO` times the images
  of the smallest, else ``none``.

A multi-label set (labels a 0/1 matrix) compares its most and least frequent labels' positives, and ``weights``
weighs each label's positives by negatives / positives, clipped to [1, 100] (:func:`tlzoo.multilabel.pos_weights`):
the binary cross-entropy's ``pos_weight``, and each per-label logistic regression's weight of its positives.
``sampler`` draws by class, which a multi-label image does not have: it is refused for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHOICES = ("auto", "none", "weights", "sampler")
AUTO_RATIO = 3.0


@dataclass
class Balance:
    """What ``--balance`` did for a run: the mode it came to, why, and the class weights it used."""

    choice: str
    mode: str  # none | weights | sampler
    ratio: float  # the largest class's training images over the smallest's
    weights: list[float] = field(default_factory=list)  # per class, for weights and sampler
    multilabel: bool = False  # weights are then each label's positive weight

    @property
    def class_weight(self) -> np.ndarray | None:
        """The loss's per-class weights (``weights`` only)."""
        return np.asarray(self.weights, np.float64) if self.mode == "weights" else None

    def record(self) -> dict[str, Any]:
        return {"choice": self.choice, "mode": self.mode, "ratio": round(self.ratio, 3),
                **({"pos_weights" if self.multilabel else "class_weights": [round(w, 6) for w in self.weights]}
                   if self.mode != "none" else {})}  # fmt: skip

    def line(self, counts: list[int]) -> tuple[str, bool] | None:
        """The one line the run says (and whether it is a warning), or None for a balanced set left alone."""
        present = [n for n in counts if n]
        largest, smallest = (max(present), min(present)) if present else (0, 0)
        sizes = f"largest {largest} vs smallest {smallest} training images, {self.ratio:.1f}:1"
        if self.multilabel:
            sizes = f"most frequent label {largest} vs least frequent {smallest} training positives, {self.ratio:.1f}:1"
            if self.mode == "weights":
                how = "auto weighs" if self.choice == "auto" else "weights weighs"
                return (f"labels are imbalanced ({sizes}): --balance {how} each label's positives by negatives / "
                        f"positives, clipped to [1, 100] (--balance none leaves them unweighted)"
                        if self.ratio >= AUTO_RATIO else
                        f"--balance weights: each label's positives weighed by negatives / positives ({sizes})"), False
            if self.ratio >= AUTO_RATIO:
                return f"labels are imbalanced ({sizes}); --balance none, as given: read per-label recall", True
            return None
        if self.mode == "weights":
            how = "auto weighs" if self.choice == "auto" else "weights weighs"
            return (f"classes are imbalanced ({sizes}): --balance {how} the loss by class, n / (classes x n_class) "
                    f"(--balance none leaves it unweighted)" if self.ratio >= AUTO_RATIO else
                    f"--balance weights: the loss weighted by class, n / (classes x n_class) ({sizes})"), False
        if self.mode == "sampler":
            return (f"--balance sampler: each epoch draws its images class-balanced, with replacement ({sizes})",
                    False)
        if self.ratio >= AUTO_RATIO:
            return f"classes are imbalanced ({sizes}); --balance none, as given: read per-class recall", True
        return None


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, np.int64), minlength=n_classes)


def balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's ``compute_class_weight("balanced")``: n / (K * n_c) for the K classes present, 0 for a
    class with no training image (it has nothing to weigh). Multi-label: each label's positive weight."""
    from sklearn.utils.class_weight import compute_class_weight

    if np.ndim(labels) == 2:
        from .multilabel import pos_weights

        return pos_weights(labels)
    labels = np.asarray(labels, np.int64)
    present = np.unique(labels)
    weights = np.zeros(n_classes, np.float64)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def decide(choice: str, labels: np.ndarray, n_classes: int) -> Balance:
    if np.ndim(labels) == 2:
        from .errors import UsageError
        from .multilabel import frequency_ratio

        if choice == "sampler":
            raise UsageError("--balance sampler draws images by class, and a multi-label image has several (or "
                             "none): use --balance weights (each label's positives weighed) or none")  # fmt: skip
        ratio = frequency_ratio(labels)
        mode = choice if choice != "auto" else ("weights" if ratio >= AUTO_RATIO else "none")
        return Balance(choice, mode, ratio, balanced_weights(labels, n_classes).tolist() if mode != "none" else [],
                       multilabel=True)  # fmt: skip
    counts = class_counts(labels, n_classes)
    present = counts[counts > 0]
    ratio = float(present.max() / present.min()) if len(present) else 1.0
    mode = choice if choice != "auto" else ("weights" if ratio >= AUTO_RATIO else "none")
    return Balance(choice, mode, ratio, balanced_weights(labels, n_classes).tolist() if mode != "none" else [])


def sampled_order(labels: np.ndarray, rng: np.random.Generator, n_classes: int) -> np.ndarray:
    """An epoch's positions under ``sampler``: ``len(labels)`` draws with replacement, each class equally likely."""
    labels = np.asarray(labels, np.int64)
    counts = class_counts(labels, n_classes).astype(np.float64)
    p = 1.0 / counts[labels]
    return rng.choice(len(labels), size=len(labels), replace=True, p=p / p.sum())
