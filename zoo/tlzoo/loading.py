"""Opening a trained model from a path: a run directory (with its framework) or an exported file."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError
from .inference import Classifier


def open_model(path: str | Path, provider: str = "auto") -> Classifier:
    """A run directory (loaded with its framework) or an exported ``.onnx`` file (run by onnxruntime)."""
    path = Path(path)
    if path.is_dir():
        if provider != "auto":
            raise UsageError(f"--provider {provider} is for exported .onnx files; {path} is a run directory "
                             f"(export it first: tlzoo export onnx {path})")  # fmt: skip
        from .trained import load_run

        return load_run(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist: give a run directory (runs/NAME) or an exported .onnx file")
    if path.suffix.lower() == ".onnx":
        from .predictor import Predictor

        return Predictor(path, provider=provider)
    raise UsageError(f"{path} is neither a run directory nor an exported .onnx file")
