"""What a run does to its classifier's outputs once trained: calibration folded into the last layer, and for a
multi-label run the thresholds its labels are predicted at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import calibration, multilabel


@dataclass
class Confidence:
    """The affine map folded into the classifier's logits (``logits * factor + shift``: 1 / T for a temperature,
    Platt's per-label ``a, b``), what the run records and says, and a multi-label run's thresholds."""

    factor: float | np.ndarray
    shift: float | np.ndarray
    record: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    thresholds: np.ndarray | None = None
    temperature: float = 1.0

    @property
    def changes(self) -> bool:
        return bool(np.any(np.asarray(self.factor) != 1.0) or np.any(np.asarray(self.shift) != 0.0))

    def proba(self, logits: np.ndarray, output: str) -> np.ndarray:
        """Probabilities of logits taken before the map was folded in."""
        if self.thresholds is None:
            return calibration.probabilities(logits, output, self.temperature)
        return multilabel.sigmoid(np.asarray(logits, np.float64) * self.factor + self.shift)


def fit(choice: str, val_logits: np.ndarray, val_labels: np.ndarray, output: str, eval_logits: np.ndarray,
        eval_labels: np.ndarray, eval_name: str, classes: list[str], threshold: float | None) -> Confidence:  # fmt: skip
    """``--calibrate choice`` (a temperature, or Platt scaling per label), then for a multi-label run its
    thresholds: ``threshold`` for every label, or each label's best F1 on the calibrated validation split."""
    if np.ndim(val_labels) != 2:
        temperature, record, said = calibration.calibrate(choice, val_logits, val_labels, output, eval_logits,
                                                          eval_labels, eval_name)  # fmt: skip
        return Confidence(1.0 / temperature, 0.0, record, [said] if said else [], temperature=temperature)
    a, b, record, lines = multilabel.calibrate(choice, val_logits, val_labels, eval_logits, eval_labels, eval_name,
                                               classes)  # fmt: skip
    val_proba = multilabel.sigmoid(np.asarray(val_logits, np.float64) * a + b)
    calibrated = "platt" in record
    thresholds, said = multilabel.thresholds_for(threshold, val_proba, val_labels, classes, calibrated)
    record["thresholds"] = "--threshold, every label" if threshold is not None else (
        "per label, half the best F1 on the validation split (calibrated probabilities)" if calibrated else
        "per label, the best F1 on the validation split, averaged over 100 bootstrap resamples")  # fmt: skip
    return Confidence(a, b, record, lines + ([said] if said else []), thresholds)
