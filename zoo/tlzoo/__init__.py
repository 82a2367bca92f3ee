"""tlzoo: a transfer-learning backbone zoo for images.

    >>> import tlzoo
    >>> [s.id for s in tlzoo.list_backbones(pattern="vgg*")]
    ['torch/vgg16', 'keras/vgg16', 'torch/vgg19', 'keras/vgg19']
    >>> backbone = tlzoo.get_backbone("mobilenet_v2", pretrained=True)

Importing tlzoo is cheap: torch, TensorFlow and onnxruntime are imported only
when a model is built, trained, exported or run.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import TlzooError
from .hookspecs import hookimpl
from .plugins import register_plugin, unregister_plugin
from .specs import BackboneSpec, ExporterSpec, Preprocessing, UnitSpec, WeightsSpec

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .backbone import Backbone, get_backbone
    from .predictor import Predictor
    from .trained import load_run
    from .training.config import TrainConfig

# Public names whose modules import numpy or frameworks: loaded on first use.
_LAZY = {
    "Backbone": ".backbone",
    "get_backbone": ".backbone",
    "Predictor": ".predictor",
    "TrainConfig": ".training.config",
    "load_run": ".trained",
}

__all__ = [
    "Backbone",
    "BackboneSpec",
    "ExporterSpec",
    "Predictor",
    "Preprocessing",
    "TlzooError",
    "TrainConfig",
    "UnitSpec",
    "WeightsSpec",
    "export",
    "get_backbone",
    "hookimpl",
    "list_backbones",
    "load_run",
    "register_plugin",
    "train",
    "unregister_plugin",
]


def list_backbones(framework: str | None = None, pattern: str | None = None) -> list[BackboneSpec]:
    """Registered backbones, optionally of one framework and matching a glob (``"resnet*"``)."""
    from .registry import get_registry

    return get_registry().list(framework=framework, pattern=pattern)


def train(config: TrainConfig | None = None, **settings: Any) -> Any:
    """Train like ``tlzoo train``: ``tlzoo.train(backbone="vgg16", strategy="fine-tune", freeze="8", data="flowers/")``.

    Returns a :class:`tlzoo.training.run.TrainResult` (run directory, metrics, history).
    """
    from .training.config import TrainConfig
    from .training.run import train as run_training

    if config is not None and settings:
        raise TypeError("give either a TrainConfig or keyword settings, not both")
    unknown = sorted(set(settings) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        from .errors import UsageError

        raise UsageError(f"unknown setting(s) {', '.join(unknown)}; see tlzoo.TrainConfig")
    cfg = config or TrainConfig(**settings)
    return run_training(cfg, given=set(settings) if config is None else None)


def export(run: Any, format: str = "onnx", out: Any = None, **options: Any) -> dict[str, Any]:
    """Export a run directory like ``tlzoo export``; returns the exporter's report (with ``path``)."""
    from .backbone import import_object
    from .registry import get_registry
    from .trained import load_run

    spec = get_registry().exporter(format)
    return dict(import_object(spec.exporter, f"exporter {spec.name}")(load_run(run), out, options))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'tlzoo' has no attribute {name!r}")
