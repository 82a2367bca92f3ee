"""Feature engines: what runs a frozen backbone when feature-extract computes its features.

``framework`` is the backbone's own framework (the adapter's feature model). Plugins add others with
``register_feature_engines`` (tlzoo's ONNX plugin adds ``onnxruntime``: a checked, cached ONNX export of
the frozen backbone). Every engine maps a batch of preprocessed NHWC float32 images to pooled features.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .backbone import Backbone

FRAMEWORK = "framework"

Runner = Callable[[np.ndarray], np.ndarray]


def names() -> list[str]:
    """Every engine ``--feature-engine`` accepts: the framework's own first, then the plugins'."""
    from .registry import get_registry

    return [FRAMEWORK, *sorted(get_registry().feature_engines)]


def check(name: str) -> None:
    """Refuse an engine no installed plugin provides, before any image is decoded."""
    if name != FRAMEWORK:
        from .registry import get_registry

        get_registry().feature_engine(name)


def runner(backbone: Backbone, tap: int | None, name: str, cache_dir: Path, device: str | None = None) -> Runner:
    """The function that computes ``backbone``'s features (at unit ``tap``) with engine ``name``; the
    framework's own runs on ``device`` (as its training engine names it), a plugin's engine chooses its own."""
    if name == FRAMEWORK:
        model = backbone.inference_model(tap, device)
        return lambda batch: backbone._run(model, batch)
    from .plugins import load_object
    from .registry import get_registry

    spec = get_registry().feature_engine(name)
    make = load_object(spec.engine, f"feature engine {spec.name}")
    run: Runner = make(backbone, tap, cache_dir)
    return run
