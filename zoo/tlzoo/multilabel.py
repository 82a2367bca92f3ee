"""Several labels an image: sigmoid outputs, one threshold per label, Platt scaling and the multi-label metrics.

A multi-label set's labels are a 0/1 matrix (images x labels). The classifier gives one logit per label and
``sigmoid`` turns each into that label's probability, independently of the others.

- **Loss**: binary cross-entropy; under ``--balance weights`` each label's positives weigh negatives / positives,
  clipped to [1, :data:`MAX_POS_WEIGHT`] (:func:`pos_weights`).
- **Calibration**: Platt scaling, one ``a, b`` per label fitted on the validation split's logits by minimizing the
  log loss (``p = sigmoid(a z + b)``), folded into the last layer like the single-label temperature. A label with
  no validation positive (or no negative) is left as it is.
- **Thresholds**: one per label, for the highest F1 on the validation split: on calibrated probabilities half the
  best F1 (:func:`half_best_f1`, the expected-F1 optimum), otherwise the F1-best threshold averaged over bootstrap
  resamples (:func:`bagged_thresholds`); a label with no validation positive keeps 0.5.
- **Metrics** (:func:`metrics`): mean average precision over the labels present, micro and macro F1 at the
  thresholds, subset accuracy (every label of an image right), Hamming loss (the share of wrong image-label
  pairs), the mean binary log loss and ECE, and per label its AP, precision, recall, F1, threshold and support.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .calibration import MIN_IMAGES, binned, table_error, wanted
from .heads import binary_log_loss, sigmoid

MAX_POS_WEIGHT = 100.0
DEFAULT_THRESHOLD = 0.5
OUTPUT = "sigmoid"  # how a multi-label classifier's logits become probabilities (tlzoo.heads.probabilities)


def pos_weights(labels: np.ndarray) -> np.ndarray:
    """Per label, negatives / positives in ``labels`` (images x labels), clipped to [1, MAX_POS_WEIGHT]; 1 for a
    label with no positive."""
    labels = np.asarray(labels, np.float64)
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    ratio = np.where(positives > 0, negatives / np.maximum(positives, 1.0), 1.0)
    return np.clip(ratio, 1.0, MAX_POS_WEIGHT)


def frequency_ratio(labels: np.ndarray) -> float:
    """The most frequent label's positives over the least frequent's (labels with none left out): what
    ``--balance auto`` compares with its 3:1."""
    positives = np.asarray(labels).sum(axis=0)
    present = positives[positives > 0]
    return float(present.max() / present.min()) if len(present) else 1.0


def _fit_platt_one(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.optimize import minimize

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        p = sigmoid(ab[0] * z + ab[1])
        g = p - y
        return binary_log_loss(p, y), np.array([np.mean(g * z), np.mean(g)])

    found = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(1e-3, 100.0), (-50, 50)])
    return float(found.x[0]), float(found.x[1])


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per label ``a, b`` minimizing the log loss of ``sigmoid(a z + b)`` on ``labels``; the labels left at
    (1, 0) for want of a positive or a negative."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    a, b = np.ones(logits.shape[1]), np.zeros(logits.shape[1])
    left = []
    for k in range(logits.shape[1]):
        positives = labels[:, k].sum()
        if positives == 0 or positives == len(labels):
            left.append(k)
            continue
        a[k], b[k] = _fit_platt_one(logits[:, k], labels[:, k])
    return a, b, left


def _per_label(proba: np.ndarray, labels: np.ndarray,
               pick: Any) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """Each label's threshold ``pick(precision, recall, cuts, its probabilities)`` from its precision-recall
    curve; :data:`DEFAULT_THRESHOLD` for a label with no positive, whose indices are returned too. Clipped
    strictly inside (0, 1), as the run's metadata holds them (a saturated sigmoid gives exactly 1.0)."""
    from sklearn.metrics import precision_recall_curve

    proba, labels = np.asarray(proba, np.float64), np.asarray(labels)
    thresholds = np.full(proba.shape[1], DEFAULT_THRESHOLD)
    left = _without_positives(labels)
    for k in range(proba.shape[1]):
        if k not in left:
            thresholds[k] = pick(*precision_recall_curve(labels[:, k], proba[:, k]), proba[:, k])
    return np.clip(thresholds, 1e-6, 1 - 1e-6), left


def _without_positives(labels: np.ndarray) -> list[int]:
    return np.flatnonzero(np.asarray(labels).sum(axis=0) == 0).tolist()


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    return 2 * precision * recall / np.maximum(precision + recall, 1e-12)


def _argmax_cut(precision: np.ndarray, recall: np.ndarray, cuts: np.ndarray, proba: np.ndarray) -> float:
    f1 = _f1(precision[:-1], recall[:-1])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]
    # any threshold between this cut and the next lower validation probability gives the same F1: take the
    # middle of the gap, not its edge (a separable split would otherwise sit on its lowest positive)
    below = proba[proba < cuts[best]]
    return float((cuts[best] + (below.max() if len(below) else 0.0)) / 2)


def choose_thresholds(proba: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per label, the threshold (predicting positive at or above it) with the highest F1 on ``labels``: halfway
    between the lowest validation probability it takes as positive and the next lower one (the higher such cut on
    ties); :data:`DEFAULT_THRESHOLD` for a label with no positive, whose indices are returned too."""
    return _per_label(proba, labels, _argmax_cut)


BOOTSTRAP = 100  # resamples of the validation split each label's threshold is averaged over (fewer on a large one)


def bagged_thresholds(proba: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Per label, :func:`choose_thresholds`' F1-best threshold averaged over bootstrap resamples of the validation
    split (bagging): the argmax of one split's F1 curve follows its noise (a flat curve's top is wherever a few
    images put it), the mean over resamples does not. A resample without a positive of a label says nothing
    about it; a label with no validation positive keeps :data:`DEFAULT_THRESHOLD`."""
    proba, labels = np.asarray(proba, np.float64), np.asarray(labels)
    left = _without_positives(labels)
    n, k = proba.shape
    rounds = int(min(BOOTSTRAP, max(20, 5_000_000 // max(n * k, 1))))
    rng = np.random.default_rng(seed)
    total, count = np.zeros(k), np.zeros(k)
    for _ in range(rounds):
        pick = rng.integers(0, n, n)
        sample = labels[pick]
        chosen, missing = choose_thresholds(proba[pick], sample)
        has = np.ones(k, bool)
        has[missing] = False
        has &= sample.sum(axis=0) < len(sample)  # all positive: no threshold separates anything
        total[has] += chosen[has]
        count[has] += 1
    thresholds = np.where(count > 0, total / np.maximum(count, 1), DEFAULT_THRESHOLD)
    thresholds[left] = DEFAULT_THRESHOLD
    return np.clip(thresholds, 1e-6, 1 - 1e-6), left


def half_best_f1(proba: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per label, half the best F1 its validation probabilities reach: for calibrated probabilities the threshold
    that maximizes a label's expected F1 is half the best F1 achievable (Lipton, Elkan and Narayanaswamy,
    "Thresholding Classifiers to Maximize F1 Score", 2014). The best F1 is a steady statistic where the threshold
    that reaches it on one split is not (a flat curve's top is wherever a few images put it). A label with no
    validation positive keeps :data:`DEFAULT_THRESHOLD`; its indices are returned too."""
    return _per_label(proba, labels, lambda precision, recall, cuts, p: float(_f1(precision, recall).max()) / 2)


def predicted(proba: np.ndarray, thresholds: np.ndarray | list[float] | float) -> np.ndarray:
    """The 0/1 predictions: each label's probability at or over its threshold."""
    return (np.asarray(proba) >= np.asarray(thresholds, np.float64)).astype(np.uint8)


def reliability(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, list[float]]:
    """Every (image, label) probability in ``bins`` equal-width bins: the bins' lower edges, counts, mean
    probability and share of positives (the multi-label reliability diagram)."""
    return binned(np.ravel(proba), np.ravel(labels), bins)


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """The binary ECE of each label (15 equal-width bins of its probability: |share of positives - mean
    probability|, weighted by count), averaged over the labels."""
    proba, labels = np.asarray(proba, np.float64), np.asarray(labels, np.float64)
    if not proba.size:
        return 0.0
    return float(np.mean([table_error(binned(proba[:, k], labels[:, k], bins)) for k in range(proba.shape[1])]))


def mean_average_precision(labels: np.ndarray, proba: np.ndarray) -> float:
    """Macro average precision over the labels with at least one positive in ``labels``."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels, np.int64)
    present = np.flatnonzero(y.sum(axis=0) > 0)
    return float(np.mean([average_precision_score(y[:, k], proba[:, k]) for k in present])) if len(present) else 0.0


def metrics(labels: np.ndarray, proba: np.ndarray, classes: list[str],
            thresholds: np.ndarray | list[float] | float) -> dict[str, Any]:  # fmt: skip
    """What a multi-label run records and ``evaluate`` prints (see the module)."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss, precision_recall_fscore_support

    y = np.asarray(labels, np.int64)
    proba = np.asarray(proba, np.float64)
    thresholds = np.broadcast_to(np.asarray(thresholds, np.float64), (y.shape[1],))
    pred = predicted(proba, thresholds).astype(np.int64)
    support = y.sum(axis=0)
    present = np.flatnonzero(support > 0)
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    ap = {int(k): float(average_precision_score(y[:, k], proba[:, k])) for k in present}
    tpr = np.where(support > 0, (pred * y).sum(0) / np.maximum(support, 1), np.nan)
    negatives = len(y) - support
    tnr = np.where(negatives > 0, ((1 - pred) * (1 - y)).sum(0) / np.maximum(negatives, 1), np.nan)
    both = np.flatnonzero((support > 0) & (negatives > 0))
    return {
        "task": "multi-label",
        "n": int(len(y)),
        "mean_average_precision": float(np.mean(list(ap.values()))) if ap else 0.0,
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(np.mean(f1[present])) if len(present) else 0.0,
        "macro_f1_classes": int(len(present)),
        "subset_accuracy": float(accuracy_score(y, pred)),
        # scikit-learn's accuracy of label sets is the subset accuracy: kept under this name for the tables
        "accuracy": float(accuracy_score(y, pred)),
        "hamming_loss": float(hamming_loss(y, pred)),
        # the mean over labels of (recall of positives + recall of negatives) / 2
        "balanced_accuracy": float(np.mean((tpr[both] + tnr[both]) / 2)) if len(both) else 0.0,
        "log_loss": binary_log_loss(proba, y),
        "ece": expected_calibration_error(proba, y),
        "per_label": {
            name: {"ap": ap.get(k), "precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                   "threshold": float(thresholds[k]), "support": int(support[k])}
            for k, name in enumerate(classes)
        },  # fmt: skip
    }


def calibrate(choice: str, val_logits: np.ndarray, val_labels: np.ndarray, eval_logits: np.ndarray,
              eval_labels: np.ndarray, eval_name: str,
              classes: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[str]]:  # fmt: skip
    """``--calibrate choice`` for a multi-label run: the per-label ``a, b`` (ones and zeros when none is fitted),
    what the run records, and the lines it says."""
    n = np.asarray(val_logits).shape[1]
    before = sigmoid(eval_logits)
    ece_before = expected_calibration_error(before, eval_labels)
    if not wanted(choice, len(val_labels)):
        why = ("off (--calibrate off)" if choice == "off" else
               f"off: the validation split holds {len(val_labels)} images, under the {MIN_IMAGES} --calibrate auto "
               f"fits from (--calibrate on fits anyway)")  # fmt: skip
        return np.ones(n), np.zeros(n), {"calibration": why, "ece": ece_before,
                                         "reliability": {"before": reliability(before, eval_labels)}}, []  # fmt: skip
    a, b, left = fit_platt(val_logits, val_labels)
    after = sigmoid(a * np.asarray(eval_logits, np.float64) + b)
    record: dict[str, Any] = {
        "calibration": "Platt scaling per label, fitted on the validation split",
        "platt": {name: [round(float(a[k]), 6), round(float(b[k]), 6)] for k, name in enumerate(classes)},
        "ece_before_calibration": ece_before, "ece": expected_calibration_error(after, eval_labels),
        "log_loss_before_calibration": binary_log_loss(before, eval_labels),
        "reliability": {"before": reliability(before, eval_labels), "after": reliability(after, eval_labels)},
    }  # fmt: skip
    lines = [f"calibrated: Platt scaling per label; mean expected calibration error on {eval_name} "
             f"{ece_before:.4f} -> {record['ece']:.4f}, log loss {record['log_loss_before_calibration']:.4f} -> "
             f"{binary_log_loss(after, eval_labels):.4f}"
             + (" (fitted and scored on the same validation split: --test-split gives an independent score)"
                if eval_name == "val" else "")]  # fmt: skip
    if eval_name == "val":
        record["calibration"] += "; scored on the same split (no test split)"
    if left:
        names = [classes[k] for k in left]
        record["not_calibrated"] = names
        lines.append(f"not calibrated (no validation positive or negative): {', '.join(names[:10])}"
                     + (f" and {len(names) - 10} more" if len(names) > 10 else ""))  # fmt: skip
    return a, b, record, lines


def thresholds_for(fixed: float | None, val_proba: np.ndarray, val_labels: np.ndarray, classes: list[str],
                   calibrated: bool = True) -> tuple[np.ndarray, str | None]:  # fmt: skip
    """The run's thresholds: ``--threshold``'s for every label, or chosen per label on validation for the best
    F1: on calibrated probabilities half the best F1 (:func:`half_best_f1`), on probabilities not calibrated the
    F1-best threshold averaged over resamples (:func:`bagged_thresholds`); and the line naming the labels left
    at 0.5."""
    if fixed is not None:
        return np.full(len(classes), float(fixed)), None
    rule = half_best_f1 if calibrated else bagged_thresholds
    thresholds, left = rule(val_proba, val_labels)
    if not left:
        return thresholds, None
    names = [classes[k] for k in left]
    return thresholds, (f"threshold 0.5 kept for {len(names)} label(s) with no validation positive: "
                        f"{', '.join(names[:10])}" + (f" and {len(names) - 10} more" if len(names) > 10 else ""))


def check_threshold(value: float | None, multilabel: bool | None = None) -> None:
    """``--threshold``: strictly between 0 and 1, and for a multi-label run (when known)."""
    from .errors import UsageError

    if value is None:
        return
    if not 0.0 < value < 1.0:
        raise UsageError(f"--threshold must be between 0 and 1 (exclusive), got {value:g}")
    if multilabel is False:
        raise UsageError("--threshold is for multi-label runs (a 'labels' or one-hot CSV); a single-label model "
                         "predicts its top class")  # fmt: skip
