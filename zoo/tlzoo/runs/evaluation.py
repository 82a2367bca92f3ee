"""Scoring a trained run or an exported model on a labelled dataset: the same metrics either way.

Images are decoded a few batches ahead on a pool of threads and scored one batch at a time, so a dataset
larger than memory streams through; unreadable images are skipped and listed with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UsageError
from ..images.batches import decode_batches
from ..images.folders import scan, shown
from ..images.sets import labelled
from .inference import check_batch_options, decoder_for, thresholds_of
from .loading import open_model


def evaluate_model(model: Path, data: Path, *, batch_size: int = 64, strict: bool = False, provider: str = "auto",
                   device: str = "auto", decoder: str = "auto", threshold: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The model's metrics on ``data``; a multi-label model's at its thresholds, or ``threshold`` for every label."""
    from ..multilabel import check_threshold
    from .metrics import classification_metrics

    check_batch_options(batch_size=batch_size)
    check_threshold(threshold)
    loaded = open_model(model, provider=provider, device=device)
    thresholds = thresholds_of(loaded, threshold)
    jpegs_by = decoder_for(loaded, decoder)
    classes, size = loaded.classes, loaded.input_size
    samples = scan(data)
    unknown = sorted({name for s in samples for name in s.names} - set(classes))
    if unknown:
        what = "labels" if thresholds is not None else "classes"
        raise UsageError(f"{data} has {what} the model does not know: {', '.join(unknown)} (it knows {', '.join(classes)})")
    files = labelled(samples, classes, thresholds is not None)
    probas, labels, skipped = [], [], []
    # Decoded on a pool of threads a few batches ahead, while the model scores the batch before.
    for batch in decode_batches(files.paths, size, batch_size=batch_size, strict=strict,
                                        prep=loaded.preprocessing, decoder=jpegs_by):  # fmt: skip
        skipped += batch.skipped
        if len(batch.index):
            probas.append(loaded.predict_proba(batch.images, batch_size=batch_size))
            labels.append(files.labels[batch.index])
    if not probas:
        raise DataError(f"none of the {len(samples)} images in {data} could be read")
    metrics = classification_metrics(np.concatenate(labels), np.concatenate(probas), classes, thresholds)
    metrics["skipped_images"] = [{"path": shown(p), "error": e} for p, e in skipped]
    return metrics
