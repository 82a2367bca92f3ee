"""Classification metrics (scikit-learn) and plots (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import expected_calibration_error


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str],
                           thresholds: Any = None) -> dict[str, Any]:  # fmt: skip
    """What a run records and ``evaluate`` prints; for multi-label labels (a 0/1 matrix), at ``thresholds``
    (see :func:`tlzoo.multilabel.metrics`)."""
    if np.ndim(y_true) == 2:
        from ..multilabel import DEFAULT_THRESHOLD, metrics

        return metrics(y_true, proba, classes, DEFAULT_THRESHOLD if thresholds is None else thresholds)
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    labels = list(range(len(classes)))
    y_pred = proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    k = top_k_for(len(classes))
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    topk = {f"top{k}_accuracy": float(top_k_accuracy_score(y_true, proba, k=k, labels=labels))} if k else {}
    # Macro averages over the classes the data holds (scikit-learn's labels=): a class with no image here has
    # no F1 to average, and counting it as 0 would score a perfect prediction of the others below 1.
    present = sorted(set(np.asarray(y_true).tolist()))
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        **topk,
        "log_loss": float(log_loss(y_true, clipped, labels=labels)),
        # top-label, 15 bins: how far the confidences are from the accuracy they come with (tlzoo.calibration)
        "ece": expected_calibration_error(proba, np.asarray(y_true)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        # the mean of the recalls of the classes present: accuracy as if every class were as frequent
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1_classes": len(present),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def top_k_for(n_classes: int) -> int | None:
    """Top-5 where it means something (many classes, as on ImageNet); top-2 for a handful; none for two."""
    if n_classes >= 20:
        return 5
    return 2 if n_classes > 2 else None


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch whose checkpoint is kept: the lowest validation loss (the first, on ties)."""
    rows = [r for r in history if r.get("val_loss") is not None]
    if not rows:
        return None
    return int(min(rows, key=lambda r: float(r["val_loss"]))["epoch"])


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Learning curves with whole-number epochs, the kept epoch marked and two-stage's boundary drawn;
    a head fitted once (scikit-learn) is shown as train against validation bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from ..files import atomic_write

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4.2))
    if len(history) == 1:
        row = history[0]
        for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
            values = [row.get(key), row.get("val_" + key)]
            bars = ax.bar(["train", "validation"], [np.nan if v is None else v for v in values], color=["C0", "C1"])
            ax.bar_label(bars, fmt="%.4g")
            ax.set_title(key)
            ax.grid(alpha=0.3, axis="y")
            ax.margins(y=0.15)
        fig.suptitle((title + ": " if title else "") + "head fitted once (no epochs)" + (f", C={row['C']:g}" if "C" in row else ""))
    else:
        x = [int(r["epoch"]) for r in history]
        best = best_epoch(history)
        stages = [r.get("stage") for r in history]
        for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
            for prefix, style, label in (("", "-", "train"), ("val_", "--", "validation")):
                ys = [row.get(prefix + key) for row in history]
                if any(v is not None for v in ys):
                    ax.plot(x, [np.nan if v is None else float(v) for v in ys], style, marker="o", markersize=4, label=label)
            for i in range(1, len(stages)):
                if stages[i] != stages[i - 1]:
                    boundary = (x[i - 1] + x[i]) / 2
                    ax.axvline(boundary, color="grey", linestyle=":", linewidth=1)
                    ax.text(boundary, 0.98, f" {stages[i]} ", transform=ax.get_xaxis_transform(), ha="left", va="top",
                            fontsize=8, color="grey")  # fmt: skip
                    ax.text(boundary, 0.98, f" {stages[i - 1]} ", transform=ax.get_xaxis_transform(), ha="right",
                            va="top", fontsize=8, color="grey")  # fmt: skip
            if best is not None:
                ax.axvline(best, color="C2", alpha=0.5, linewidth=6, label=f"kept: epoch {best}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(min(x) - 0.5, max(x) + 0.5)
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


MAX_PLOTTED_CLASSES = 30


def plot_per_label(per_label: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """A multi-label run's picture in place of a confusion matrix: each label's average precision, and its
    precision and recall at its threshold, with its support (the labels with the lowest AP when there are many)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    names = list(per_label)
    if len(names) > MAX_PLOTTED_CLASSES:
        names = sorted(names, key=lambda n: per_label[n]["ap"] if per_label[n]["ap"] is not None else -1)[:MAX_PLOTTED_CLASSES]
        title = f"{title}: the {len(names)} labels of lowest AP of {len(per_label)}"
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.45 * len(names) + 1.9)))
    for offset, key, colour in ((-0.27, "ap", "C0"), (0.0, "precision", "C1"), (0.27, "recall", "C2")):
        values = [per_label[n][key] if per_label[n][key] is not None else np.nan for n in names]
        ax.barh(y + offset, values, height=0.26, color=colour, label=key if key != "ap" else "average precision")
    ax.set_yticks(y, [f"{n} ({per_label[n]['support']}, t={per_label[n]['threshold']:.2f})" for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (precision and recall at each label's threshold t; support in brackets)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / max(len(names), 1)), ncol=3,
              frameon=False)  # fmt: skip
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def most_confused(matrix: np.ndarray, limit: int) -> list[int]:
    """The classes a confusion-matrix plot shows: all up to ``limit``; past it, the ``limit`` classes with the
    most errors (as truth or as prediction), in their own order (metrics.json keeps the whole matrix)."""
    n = len(matrix)
    if n <= limit:
        return list(range(n))
    errors = matrix.sum(0) + matrix.sum(1) - 2 * np.diag(matrix)
    return sorted(np.argsort(-errors, kind="stable")[:limit].tolist())


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    from ..files import atomic_write

    full = np.asarray(matrix)
    shown = most_confused(full, MAX_PLOTTED_CLASSES)
    if len(shown) < len(classes):
        title = f"{title}: the {len(shown)} most-confused of {len(classes)} classes"
    size = max(5.0, 0.5 * len(shown) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    names = [classes[i] for i in shown]
    ConfusionMatrixDisplay(full[np.ix_(shown, shown)], display_labels=names).plot(
        ax=ax, colorbar=False, xticks_rotation=45 if max(len(c) for c in names) > 3 else "horizontal"
    )
    import textwrap
    import warnings

    ax.set_title("\n".join(textwrap.wrap(title, width=int(size * 11))), fontsize=10)
    with warnings.catch_warnings(record=True) as said:  # matplotlib warns once per missing glyph: say it once
        warnings.simplefilter("always")
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    glyphs = sorted({str(w.message) for w in said if "missing from" in str(w.message)})
    for w in said:
        if "missing from" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if glyphs:
        warnings.warn(f"{path.name}: the plot's font lacks {len(glyphs)} character(s) of the class names, which show "
                      f"as boxes (metrics.json has the names as they are)", stacklevel=2)  # fmt: skip
