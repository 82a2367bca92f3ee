"""Classifier heads on bottleneck features.

Linear heads are fitted by scikit-learn on standardized features; the scaler is
then folded into the weights, so every head is a plain stack of dense layers
(:class:`HeadParams`) that each framework adapter turns into its own layers,
exported in the same graph as the backbone.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bias for classes absent from the training data: never predicted.
_ABSENT_CLASS_BIAS = -1e4


@dataclass
class HeadParams:
    """Dense layers ``x @ W + b`` (W shaped (in, out)); ReLU between them.

    ``output`` says how logits become probabilities: ``softmax`` over classes,
    ``ovr`` (one sigmoid per class, renormalized to sum to one), or ``sigmoid``
    (multi-label: one independent probability per label).
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    output: str = "softmax"
    dropout: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[0], *(w.shape[1] for w in self.weights)]

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        return x

    def describe(self) -> dict[str, Any]:
        return {"sizes": self.sizes, "output": self.output, "dropout": self.dropout}


def scaled(head: HeadParams, factor: float | np.ndarray, shift: float | np.ndarray = 0.0) -> HeadParams:
    """``head`` with its logits multiplied by ``factor`` and ``shift`` added (its last layer's weights and bias;
    both a number or one per output): a temperature T folded into the head is ``factor = 1 / T``, Platt scaling's
    per-label ``a z + b`` is ``factor = a, shift = b``."""
    weights, biases = list(head.weights), list(head.biases)
    factor, shift = np.asarray(factor, np.float64), np.asarray(shift, np.float64)
    weights[-1] = (weights[-1] * factor).astype(head.weights[-1].dtype)
    biases[-1] = (biases[-1] * factor + shift).astype(head.biases[-1].dtype)
    return dataclasses.replace(head, weights=weights, biases=biases)


def probabilities(logits: np.ndarray, output: str) -> np.ndarray:
    """Turn a head's logits into class probabilities."""
    logits = np.asarray(logits, dtype=np.float64)
    if output == "sigmoid":
        return sigmoid(logits)
    if output == "ovr":
        p = sigmoid(logits)
        return p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, np.float64), -60, 60)))


def binary_log_loss(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy over every image and label (a multi-label head's loss)."""
    p = np.clip(np.asarray(proba, np.float64), 1e-15, 1 - 1e-15)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if y.size else 0.0


def spread_floor(std: np.ndarray) -> np.ndarray:
    """Standard deviations, floored at a tenth of their median.

    Folding a scaler into the head divides its weights by each feature's spread: an almost
    constant feature (a dead ReLU unit) would get an enormous weight, and the slightest change
    in it (fp16 rounding, int8 quantization) would swing the prediction.
    """
    positive = std[std > 0]
    floor = 0.1 * float(np.median(positive)) if positive.size else 1.0
    return np.maximum(std, max(floor, 1e-12))


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread while scikit-learn fits a linear model on features.

    numpy and scipy each load their own OpenBLAS. lbfgs alternates numpy's matrix products with
    scipy's vector updates, and on a machine with few cores the two idle thread pools spin against
    each other. On 2 cores the softmax path took 2.3 s with the default threads and 0.47 s with one
    (benchmarks/heads.py). Head problems are thin (C classes wide), so extra BLAS threads gain little.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def fit_linear(kind: str, x: np.ndarray, y: np.ndarray, n_classes: int, *, c: float = 1.0, seed: int = 0,
               class_weight: np.ndarray | None = None) -> HeadParams:  # fmt: skip
    """``softmax``, ``logreg-ovr`` or ``linear-svm`` fitted by scikit-learn, scaler folded in."""
    return fit_linear_path(kind, x, y, n_classes, (c,), seed=seed, class_weight=class_weight)[0]


def fit_linear_path(kind: str, x: np.ndarray, y: np.ndarray, n_classes: int, cs: tuple[float, ...], *,
                    seed: int = 0, class_weight: np.ndarray | None = None) -> list[HeadParams]:  # fmt: skip
    """One head per regularization in ``cs`` (ascending), on one standardization. The softmax fits are
    warm-started from the previous C's solution (the same convex optimum, reached in far fewer iterations).
    ``class_weight`` (per class, :mod:`tlzoo.balance`) is scikit-learn's ``class_weight``; for one-vs-rest,
    whose binary fits see other labels, each image's weight (``sample_weight``, routed to them)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    scaler = StandardScaler().fit(x)
    scaler.scale_ = spread_floor(scaler.scale_)
    xs = scaler.transform(x)
    if np.ndim(y) == 2:
        if kind != "logreg-ovr":
            raise ValueError(f"the {kind} head is for single-label data")
        return _fit_per_label(xs, y, cs, scaler, x.shape[1], seed, class_weight)
    heads = []
    warm: Any = None
    weights = {int(k): float(class_weight[k]) for k in np.unique(y)} if class_weight is not None else None
    with one_blas_thread(), sklearn.config_context(enable_metadata_routing=class_weight is not None):
        for c in cs:
            output = "softmax"
            if kind == "softmax":
                if warm is None:
                    warm = LogisticRegression(C=c, max_iter=3000, random_state=seed, warm_start=True,
                                              class_weight=weights)  # fmt: skip
                warm.set_params(C=c)
                model: Any = warm.fit(xs, y)
                coef, intercept, classes = model.coef_.copy(), model.intercept_.copy(), model.classes_
            elif kind == "logreg-ovr":
                if class_weight is None:
                    model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=3000, random_state=seed)).fit(xs, y)
                else:
                    binary = LogisticRegression(C=c, max_iter=3000, random_state=seed).set_fit_request(sample_weight=True)
                    model = OneVsRestClassifier(binary).fit(xs, y, sample_weight=class_weight[y])
                coef = np.vstack([e.coef_ for e in model.estimators_])
                intercept = np.concatenate([e.intercept_ for e in model.estimators_])
                classes, output = model.classes_, "ovr"
            elif kind == "linear-svm":
                # Probabilities are a softmax over the SVM margins: uncalibrated, but monotone in the margin.
                model = LinearSVC(C=c, dual="auto", random_state=seed, max_iter=5000, class_weight=weights).fit(xs, y)
                coef, intercept, classes = model.coef_, model.intercept_, model.classes_
            else:
                raise ValueError(f"not a linear head: {kind}")
            heads.append(_fold(coef, intercept, classes, scaler, x.shape[1], n_classes, output))
    return heads


def _fit_per_label(xs: np.ndarray, y: np.ndarray, cs: tuple[float, ...], scaler: Any, dim: int, seed: int,
                   pos_weight: np.ndarray | None) -> list[HeadParams]:  # fmt: skip
    """Multi-label: one logistic regression per label on the standardized features (each C warm-started from
    the one before), its positives weighed by ``pos_weight`` when given; a label that is always (or never) there
    in training gets a constant logit."""
    from sklearn.linear_model import LogisticRegression

    n = y.shape[1]
    coefs = np.zeros((len(cs), n, xs.shape[1]))
    intercepts = np.zeros((len(cs), n))
    with one_blas_thread():
        for k in range(n):
            column = np.asarray(y[:, k], np.int64)
            if column.min() == column.max():
                intercepts[:, k] = -_ABSENT_CLASS_BIAS if column[0] else _ABSENT_CLASS_BIAS
                continue
            weight = {0: 1.0, 1: float(pos_weight[k])} if pos_weight is not None else None
            model = LogisticRegression(max_iter=3000, random_state=seed, warm_start=True, class_weight=weight)
            for i, c in enumerate(cs):
                model.set_params(C=c).fit(xs, column)
                coefs[i, k], intercepts[i, k] = model.coef_[0], model.intercept_[0]
    heads = []
    for i in range(len(cs)):
        w = (coefs[i] / scaler.scale_).T
        b = intercepts[i] - coefs[i] @ (scaler.mean_ / scaler.scale_)
        heads.append(HeadParams(weights=[w.astype(np.float32)], biases=[b.astype(np.float32)], output="sigmoid"))
    return heads


def head_scores(head: HeadParams, x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[float, float]:
    """(log loss, accuracy) of a head on features ``x`` with labels ``y`` (see :func:`proba_scores`)."""
    return proba_scores(probabilities(head.logits(x), head.output), y, n_classes)


def proba_scores(p: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[float, float]:
    """(log loss, accuracy) of probabilities ``p`` on labels ``y``; multi-label: the mean binary log loss and the
    share of (image, label) pairs right at 0.5."""
    from sklearn.metrics import log_loss

    if np.ndim(y) == 2:
        return binary_log_loss(p, y), float(((p >= 0.5) == (np.asarray(y) > 0)).mean())
    return float(log_loss(y, np.clip(p, 1e-15, 1), labels=range(n_classes))), float((p.argmax(1) == y).mean())


# The regularization strengths a linear head is fitted with when --C is not given (one warm-started path).
C_GRID = (0.01, 0.1, 1.0, 10.0)


def choose_c(kind: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
             cs: tuple[float, ...], *, seed: int = 0,
             class_weight: np.ndarray | None = None) -> tuple[float, HeadParams, list[tuple[float, float, float]]]:  # fmt: skip
    """The C in ``cs`` whose head does best on the validation data, and that head (kept, not refitted); with
    every C's (C, validation accuracy, validation log loss).

    The logistic heads are ranked by log loss (then accuracy, then the stronger regularization): a continuous
    score, so the choice does not hinge on one validation image. Ranked by accuracy, a feature change of a
    few parts per million (folded batch norms, another device) flipped the main job's choice between C=1 and
    C=10, whose weakly regularized fit moved two validation images. The SVM's probabilities are a softmax
    over uncalibrated margins, so it is ranked by accuracy first.
    """
    rows = []
    for c, head in zip(cs, fit_linear_path(kind, x, y, n_classes, cs, seed=seed, class_weight=class_weight)):
        loss, accuracy = head_scores(head, x_val, y_val, n_classes)
        rows.append((c, accuracy, loss, head))

    def rank(row: tuple[float, float, float, HeadParams]) -> tuple[float, float, float]:
        c, accuracy, loss, _ = row
        return (accuracy, -loss, -c) if kind == "linear-svm" else (-loss, accuracy, -c)

    c, _, _, head = max(rows, key=rank)
    return c, head, [(c, accuracy, loss) for c, accuracy, loss, _ in rows]


def _fold(coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, scaler: Any, dim: int, n_classes: int,
          output: str) -> HeadParams:  # fmt: skip
    """The scaler folded into the weights: one dense layer on the raw features."""
    if coef.shape[0] == 1 and len(classes) == 2:  # binary problems: one row for the positive class
        coef = np.vstack([-coef, coef]) / 2
        intercept = np.array([-intercept[0], intercept[0]]) / 2
    w = np.zeros((dim, n_classes))
    b = np.full(n_classes, _ABSENT_CLASS_BIAS)
    scale = scaler.scale_
    for row, cls in enumerate(classes):
        w[:, cls] = coef[row] / scale
        b[cls] = intercept[row] - float(np.dot(coef[row], scaler.mean_ / scale))
    return HeadParams(weights=[w.astype(np.float32)], biases=[b.astype(np.float32)], output=output)


def fit_mlp(
    x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int, *,
    hidden: list[int], dropout: float, epochs: int, lr: float, weight_decay: float, patience: int,
    batch_size: int, seed: int, trainer: Any, on_epoch: Any = None, class_weight: np.ndarray | None = None,
    epoch_order: Any = None,
) -> HeadParams:  # fmt: skip
    """Dense layers with dropout trained on cached features, early-stopped on validation loss.

    ``trainer`` is the backbone's framework adapter's ``train_mlp``: loading another framework into
    the same process is slow, and torch's optimizers after TensorFlow has run abort on conflicting
    LLVM copies.
    """
    mean, std = x.mean(axis=0), spread_floor(x.std(axis=0))
    xs, xv = ((x - mean) / std).astype(np.float32), ((x_val - mean) / std).astype(np.float32)
    sizes = [x.shape[1], *hidden, n_classes]
    # the class weights go to the trainer only when there are some: an adapter written before them still works
    weighted: dict[str, Any] = {"class_weight": class_weight.astype(np.float32)} if class_weight is not None else {}
    multilabel = np.ndim(y) == 2
    if multilabel:  # binary cross-entropy; class_weight is then each label's positive weight
        weighted = {"multilabel": True, **({"pos_weight": class_weight.astype(np.float32)} if class_weight is not None else {})}
    if epoch_order is not None:  # --balance sampler: the positions each epoch trains on (epoch from 0)
        weighted["epoch_order"] = epoch_order
    weights, biases, history = trainer(
        xs, y.astype(np.int64), xv, y_val.astype(np.int64), sizes, dropout=dropout, epochs=epochs, lr=lr,
        weight_decay=weight_decay, patience=patience, batch_size=batch_size, seed=seed, on_epoch=on_epoch, **weighted,
    )  # fmt: skip
    weights = [w.astype(np.float64) for w in weights]
    biases = [b.astype(np.float64) for b in biases]
    # Fold the standardization into the first layer.
    biases[0] = biases[0] - (mean / std) @ weights[0]
    weights[0] = weights[0] / std[:, None]
    return HeadParams(
        weights=[w.astype(np.float32) for w in weights], biases=[b.astype(np.float32) for b in biases],
        output="sigmoid" if multilabel else "softmax", dropout=dropout, history=history,
    )  # fmt: skip
