"""Confidences that mean what they say: one temperature for a single-label classifier's logits.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017): the logits are divided by
one number T > 0, fitted on the validation split by minimizing the log loss with L-BFGS (scipy). Dividing by a
positive number never changes which class is on top, so accuracy is unchanged by construction; a network
that is overconfident (most fine-tuned ones) gets T > 1, and its 0.95 then means right about 95 % of the time.

The temperature is folded into the classifier's last layer (its weights and bias divided by T), so the run's
model, ``predict``, ``evaluate`` and every export give the calibrated probabilities with no extra step; a run
made before calibration existed is T = 1.

The expected calibration error (ECE) is the top-label one: the predictions put in :data:`ECE_BINS` equal-width
bins by their top probability, and the bins' |accuracy - confidence| averaged, weighted by their counts.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
MIN_IMAGES = 50  # --calibrate auto fits a temperature when the validation split holds at least this many images
T_RANGE = (0.05, 20.0)  # a fit outside this is a degenerate one (a split too small or too easy): clipped into it
CHOICES = ("auto", "on", "off")


def probabilities(logits: np.ndarray, output: str, temperature: float = 1.0) -> np.ndarray:
    from .heads import probabilities as from_logits

    return from_logits(np.asarray(logits, np.float64) / temperature, output)


def log_loss(proba: np.ndarray, labels: np.ndarray) -> float:
    picked = np.clip(proba[np.arange(len(labels)), labels], 1e-15, 1.0)
    return float(-np.mean(np.log(picked)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, output: str) -> float:
    """The T minimizing the log loss of ``probabilities(logits / T)`` on ``labels`` (searched over log T)."""
    from scipy.optimize import minimize

    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)

    def loss(log_t: np.ndarray) -> float:
        return log_loss(probabilities(logits, output, math.exp(float(log_t[0]))), labels)

    found = minimize(loss, x0=np.zeros(1), method="L-BFGS-B",
                     bounds=[(math.log(T_RANGE[0]), math.log(T_RANGE[1]))])  # fmt: skip
    return float(math.exp(float(found.x[0])))


def reliability(proba: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per bin of top probability: its lower edge, how many predictions, their mean confidence and accuracy."""
    return binned(proba.max(axis=1), (proba.argmax(axis=1) == labels).astype(np.float64), bins)


def binned(confidence: np.ndarray, outcome: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """``confidence`` in ``bins`` equal-width bins: each bin's lower edge, count, mean confidence and mean
    ``outcome`` (1 where the prediction was right, or the label there), under the key ``accuracy``."""
    confidence, outcome = np.asarray(confidence, np.float64), np.asarray(outcome, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins).astype(np.float64)
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / np.maximum(counts, 1)
    accuracy = np.bincount(which, weights=outcome, minlength=bins) / np.maximum(counts, 1)
    return {"lower": edges[:-1].tolist(), "count": counts.tolist(), "confidence": mean_confidence.tolist(),
            "accuracy": accuracy.tolist()}  # fmt: skip


def table_error(table: dict[str, list[float]]) -> float:
    """The expected calibration error of a :func:`binned` table: the bins' |accuracy - confidence|, weighted by
    their counts."""
    counts = np.asarray(table["count"])
    gaps = np.abs(np.asarray(table["accuracy"]) - np.asarray(table["confidence"]))
    return float((counts * gaps).sum() / max(counts.sum(), 1.0))


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    return table_error(reliability(np.asarray(proba, np.float64), np.asarray(labels, np.int64), bins))


def wanted(choice: str, val_images: int) -> bool:
    """Whether ``--calibrate choice`` fits a temperature for a validation split of ``val_images``."""
    return choice == "on" or (choice == "auto" and val_images >= MIN_IMAGES)


def plot_reliability(before: dict[str, list[float]], after: dict[str, list[float]] | None, path: object,
                     title: str, per_label: bool = False) -> None:  # fmt: skip
    """The reliability diagram: each bin's accuracy against its confidence, before and after calibration, the
    diagonal being perfect calibration; bar widths are the bins, empty bins left out. ``per_label``: the bins
    hold every (image, label) probability and their share of positives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_write

    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    width = 1.0 / len(before["lower"])
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for table, colour, name in ((before, "tab:orange", "before calibration"), (after, "tab:blue", "calibrated")):
        if table is None:
            continue
        keep = np.asarray(table["count"]) > 0
        lower = np.asarray(table["lower"])[keep]
        ax.bar(lower, np.asarray(table["accuracy"])[keep], width=width, align="edge", alpha=0.45, color=colour,
               edgecolor=colour, label=name)  # fmt: skip
        ax.plot(np.asarray(table["confidence"])[keep], np.asarray(table["accuracy"])[keep], "o", color=colour,
                markersize=3)  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability of each (image, label)" if per_label else "confidence (top probability)")
    ax.set_ylabel("share that carry the label" if per_label else "accuracy")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, width=60)), fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))  # type: ignore[arg-type]
    plt.close(fig)


def calibrate(choice: str, val_logits: np.ndarray, val_labels: np.ndarray, output: str, eval_logits: np.ndarray,
              eval_labels: np.ndarray, eval_name: str) -> tuple[float, dict[str, object], str | None]:  # fmt: skip
    """``--calibrate choice``: the temperature (1.0 when none is fitted), what the run records, and the line it says.

    The temperature is fitted on the validation split's logits and scored on the evaluation split's (the test
    split when there is one)."""
    before = probabilities(eval_logits, output)
    ece_before = expected_calibration_error(before, eval_labels)
    if not wanted(choice, len(val_labels)):
        why = ("off (--calibrate off)" if choice == "off" else
               f"off: the validation split holds {len(val_labels)} images, under the {MIN_IMAGES} --calibrate auto "
               f"fits from (--calibrate on fits anyway)")  # fmt: skip
        return 1.0, {"calibration": why, "temperature": 1.0, "ece": ece_before,
                     "reliability": {"before": reliability(before, eval_labels)}}, None  # fmt: skip
    temperature = fit_temperature(val_logits, val_labels, output)
    after = probabilities(eval_logits, output, temperature)
    record: dict[str, object] = {
        "calibration": "temperature scaling, fitted on the validation split", "temperature": round(temperature, 6),
        "ece_before_calibration": ece_before, "ece": expected_calibration_error(after, eval_labels),
        "log_loss_before_calibration": log_loss(before, eval_labels),
        "reliability": {"before": reliability(before, eval_labels), "after": reliability(after, eval_labels)},
    }  # fmt: skip
    line = (f"calibrated: temperature {temperature:.3f}; expected calibration error on {eval_name} "
            f"{record['ece_before_calibration']:.4f} -> {record['ece']:.4f}, log loss "
            f"{record['log_loss_before_calibration']:.4f} -> {log_loss(after, eval_labels):.4f}")  # fmt: skip
    if eval_name == "val":
        line += " (fitted and scored on the same validation split: --test-split gives an independent score)"
        record["calibration"] += "; scored on the same split (no test split)"  # type: ignore[operator]
    return temperature, record, line
