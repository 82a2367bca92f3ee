"""Run directories and atomic writes: a crash never leaves a half-written file in place."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def new_run_dir(out_dir: Path, name: str, *, exist_ok: bool = False) -> Path:
    """``out_dir/name``, or ``name-2``, ``name-3``... if taken (as Ultralytics numbers its runs)."""
    out_dir = Path(out_dir)
    candidate = out_dir / name
    n = 2
    while candidate.exists() and not exist_ok:
        candidate = out_dir / f"{name}-{n}"
        n += 1
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("tlzoo", "torch", "torchvision", "tensorflow", "keras", "numpy", "scikit-learn", "onnx",
                 "onnxruntime-gpu", "onnxruntime", "pillow"):  # fmt: skip
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
