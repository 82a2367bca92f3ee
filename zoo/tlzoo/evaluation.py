"""Scoring a trained run or an exported model on a labelled dataset: the same metrics either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data as datamod
from .errors import UsageError
from .inference import check_batch_options, open_model


def evaluate_model(model: Path, data: Path, *, batch_size: int = 64) -> dict[str, Any]:
    from .training.metrics import classification_metrics

    check_batch_options(batch_size=batch_size)
    loaded = open_model(model)
    classes, size, predict = loaded.classes, loaded.input_size, loaded.predict_proba
    samples = datamod.scan(data)
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise UsageError(f"{data} has classes the model does not know: {', '.join(unknown)} (it knows {', '.join(classes)})")
    images = datamod.load(samples, size, classes)
    proba = predict(images.images, batch_size=batch_size)
    metrics = classification_metrics(images.labels, proba, classes)
    metrics["skipped_images"] = [{"path": p, "error": e} for p, e in images.skipped]
    return metrics
