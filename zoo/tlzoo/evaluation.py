"""Scoring a trained run or an exported model on a labelled dataset: the same metrics either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data as datamod
from .errors import UsageError


def evaluate_model(model: Path, data: Path, *, batch_size: int = 64) -> dict[str, Any]:
    from .training.metrics import classification_metrics

    model = Path(model)
    if model.is_dir():
        from .trained import load_run

        run = load_run(model)
        classes, size = run.classes, run.input_size
        predict = run.predict_proba
    elif model.suffix == ".onnx":
        from .predictor import Predictor

        predictor = Predictor(model)
        classes, size = predictor.classes, predictor.input_size
        predict = predictor.predict_proba
    else:
        raise UsageError(f"{model} is neither a run directory nor an .onnx file")
    samples = datamod.scan(data)
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise UsageError(f"{data} has classes the model does not know: {', '.join(unknown)} (it knows {', '.join(classes)})")
    images = datamod.load(samples, size, classes)
    proba = predict(images.images, batch_size=batch_size)
    metrics = classification_metrics(images.labels, proba, classes)
    metrics["skipped_images"] = [{"path": p, "error": e} for p, e in images.skipped]
    return metrics
