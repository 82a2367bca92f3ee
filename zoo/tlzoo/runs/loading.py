"""Opening a trained model from a path: a run directory (with its framework) or an exported file.

An exported file is opened by the runtime of the exporter that writes files of its type
(``ExporterSpec.runtime``, found by ``file_suffix``): core knows no export format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from .inference import Classifier


def runtime_for(path: Path) -> tuple[Any, Any]:
    """The exporter spec whose files look like ``path``, and its runtime (imported)."""
    from ..plugins import load_object
    from ..registry import get_registry

    exporters = [e for e in get_registry().exporters.values() if e.runtime and e.file_suffix]
    for spec in exporters:
        if path.name.lower().endswith(spec.file_suffix.lower()):
            return spec, load_object(spec.runtime, f"runtime of export format {spec.name}")
    kinds = ", ".join(f"{e.file_suffix} ({e.name})" for e in exporters) or "none installed"
    raise UsageError(f"{path} is neither a run directory nor an exported model file this tlzoo can run "
                     f"(file types: {kinds})")  # fmt: skip


def open_model(path: str | Path, provider: str = "auto", device: str = "auto") -> Classifier:
    """A run directory (loaded by its framework's adapter, run on ``device``) or an exported file (run by its
    exporter's runtime on ``provider``): each option is refused for the other kind."""
    path = Path(path)
    if path.is_dir():
        if provider != "auto":
            raise UsageError(f"--provider {provider} is for exported model files; {path} is a run directory "
                             f"(export it first: tlzoo export FORMAT {path}, or choose where it runs with --device)")  # fmt: skip
        from .trained import load_run

        return load_run(path, device=device)
    if not path.exists():
        raise UsageError(f"{path} does not exist: give a run directory (runs/NAME) or an exported model file")
    if device != "auto":
        raise UsageError(f"--device {device} is for run directories; {path} is an exported model file: choose "
                         f"where it runs with --provider")  # fmt: skip
    _, runtime = runtime_for(path)
    return runtime(path, provider=provider)  # type: ignore[no-any-return]


def Predictor(path: str | Path, provider: str = "auto") -> Any:  # noqa: N802  (tlzoo 0.1's public class name)
    """An exported model file, ready to run: ``tlzoo.Predictor("model.onnx").predict(["cat.jpg"])``.

    The object comes from the runtime of the exporter that writes this file type.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    _, runtime = runtime_for(path)
    return runtime(path, provider=provider)
