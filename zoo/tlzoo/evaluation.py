"""Scoring a trained run or an exported model on a labelled dataset: the same metrics either way.

Images are decoded and scored one batch at a time, so a dataset larger than memory streams through;
unreadable images are skipped and listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import data as datamod
from .errors import DataError, UsageError
from .inference import check_batch_options
from .loading import open_model


def evaluate_model(model: Path, data: Path, *, batch_size: int = 64, strict: bool = False) -> dict[str, Any]:
    from .training.metrics import classification_metrics

    check_batch_options(batch_size=batch_size)
    loaded = open_model(model)
    classes, size = loaded.classes, loaded.input_size
    samples = datamod.scan(data)
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise UsageError(f"{data} has classes the model does not know: {', '.join(unknown)} (it knows {', '.join(classes)})")
    probas, labels, skipped = [], [], []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        try:
            part = datamod.load(batch, size, classes, strict=strict, whole_classes=False, prep=loaded.preprocessing)
        except DataError as exc:
            if strict or not str(exc).startswith("no readable images"):
                raise
            skipped += [(str(s.path), "unreadable") for s in batch]
            continue
        skipped += part.skipped
        probas.append(loaded.predict_proba(part.images, batch_size=batch_size))
        labels.append(part.labels)
    if not probas:
        raise DataError(f"none of the {len(samples)} images in {data} could be read")
    metrics = classification_metrics(np.concatenate(labels), np.concatenate(probas), classes)
    metrics["skipped_images"] = [{"path": p, "error": e} for p, e in skipped]
    return metrics
