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
from .specs import BackboneSpec, ExporterSpec, FeatureEngineSpec, FrameworkSpec, Preprocessing, UnitSpec, WeightsSpec

from .version import __version__ as __version__

if TYPE_CHECKING:
    from .adapters import FrameworkAdapter
    from .backbone import Backbone, get_backbone
    from .runs.loading import Predictor
    from .runs.trained import load_run
    from .training.config import TrainConfig

# Public names whose modules import numpy or frameworks: loaded on first use.
_LAZY = {
    "Backbone": ".backbone",
    "FrameworkAdapter": ".adapters",
    "get_backbone": ".backbone",
    "Predictor": ".runs.loading",
    "TrainConfig": ".training.config",
    "load_run": ".runs.trained",
}

__all__ = [
    "Backbone",
    "BackboneSpec",
    "ExporterSpec",
    "FeatureEngineSpec",
    "FrameworkAdapter",
    "FrameworkSpec",
    "Predictor",
    "Preprocessing",
    "TlzooError",
    "TrainConfig",
    "UnitSpec",
    "WeightsSpec",
    "advise",
    "compare",
    "evaluate",
    "export",
    "get_backbone",
    "hookimpl",
    "list_backbones",
    "load_run",
    "predict",
    "register_plugin",
    "train",
    "unregister_plugin",
]


def list_backbones(framework: str | None = None, pattern: str | None = None) -> list[BackboneSpec]:
    """Registered backbones, optionally of one framework and matching a glob (``"resnet*"``)."""
    from .registry import get_registry

    return get_registry().list(framework=framework, pattern=pattern)


def _reporter(verbose: bool | None) -> Any:
    """Progress bars and per-epoch lines in a terminal or a notebook (rich renders in both); silent in scripts
    whose output goes to a file, unless ``verbose=True``."""
    from .training.reporter import Reporter, RichReporter

    if verbose is None:
        import sys

        verbose = sys.stdout.isatty() or "ipykernel" in sys.modules
    if not verbose:
        return Reporter()
    from rich.console import Console

    return RichReporter(Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True))


def train(config: TrainConfig | None = None, *, verbose: bool | None = None, **settings: Any) -> Any:
    """Train like ``tlzoo train``: ``tlzoo.train(backbone="vgg16", freeze="8", data="flowers/")``.

    Settings follow the CLI's rule: ``freeze`` alone selects fine-tune, options that do not fit the strategy
    are refused. ``verbose`` shows progress (default: in a terminal or notebook). Returns a
    :class:`tlzoo.training.run.TrainResult` (run directory, metrics, history).
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
    return run_training(cfg, _reporter(verbose), given=set(settings) if config is None else None)


def evaluate(model: Any, data: Any, *, batch_size: int = 64, strict: bool = False, provider: str = "auto",
             device: str = "auto", decoder: str = "auto", threshold: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Score a run directory or an exported file on labelled images, like ``tlzoo evaluate``; returns the metrics.
    ``device`` places a run directory's classifier (``decoder``: who decodes its JPEGs there), ``provider``
    runs an exported file; ``threshold`` scores a multi-label model at one threshold for every label."""
    from pathlib import Path

    from .runs.evaluation import evaluate_model

    return evaluate_model(Path(model), Path(data), batch_size=batch_size, strict=strict, provider=provider,
                          device=device, decoder=decoder, threshold=threshold)  # fmt: skip


def predict(model: Any, images: Any, *, top_k: int | None = None, batch_size: int = 32, strict: bool = False,
            provider: str = "auto", device: str = "auto", decoder: str = "auto",
            threshold: float | None = None) -> list[Any]:  # fmt: skip
    """Top-k labels (default 5) for image files, folders, uint8 arrays or PIL images, from a run directory or an
    exported file: ``tlzoo.predict("runs/demo", ["cat.jpg", "photos/"])``; a multi-label model's labels over its
    thresholds (``threshold``: one for every label; ``top_k`` is refused). Unreadable files are skipped unless
    ``strict``; ``device`` places a run directory's classifier (``decoder``: who decodes its JPEGs there),
    ``provider`` runs an exported file."""
    from .runs.inference import decoder_for, predict_stream
    from .runs.loading import open_model

    sources = images if isinstance(images, list) else [images]
    loaded = open_model(model, provider=provider, device=device)
    return list(predict_stream(loaded, sources, top_k=top_k, batch_size=batch_size, strict=strict,
                               decoder=decoder_for(loaded, decoder), threshold=threshold))  # fmt: skip


def compare(data: Any = None, backbones: Any = "mobilenet_v2", strategies: str = "feature-extract,fine-tune,scratch", *,
            out: Any = "runs/compare", budget_minutes: float | None = None, onnx: bool = True,
            verbose: bool | None = None, **shared: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Train every backbone x strategy on one split, like ``tlzoo compare``; returns the ranked leaderboard.

    ``shared`` are the training settings every combination receives, as in ``tlzoo compare --help``:
    ``epochs`` (default 5), ``image_size``, ``batch_size``, ``test_split`` (0.2), ``augment``, ``weights``, ``seed``.
    """
    from pathlib import Path

    from .comparison import common_args, compare as run_compare, ranked
    from .images.datasets import ensure_digits
    from .images.split import default_data_root

    names = [b.strip() for b in backbones.split(",")] if isinstance(backbones, str) else list(backbones)
    common = common_args(**shared)
    reporter = _reporter(verbose)
    rows = run_compare(
        Path(data) if data is not None else ensure_digits(default_data_root()), [n for n in names if n], strategies,
        out_dir=Path(out), budget_minutes=budget_minutes, onnx=onnx, common=common,
        on_start=lambda i, n, c: reporter.info(f"[{i}/{n}] {c.backbone} {c.label}: training ..."),
        on_row=lambda r: reporter.info(f"      {r['backbone']} {r['strategy']}: {r['status']}"),
    )  # fmt: skip
    return ranked(rows)


def advise(data: Any = None, backbones: Any = "mobilenet_v2", *, budget_minutes: float = 3.0,
           verbose: bool | None = None, **data_settings: Any) -> Any:  # fmt: skip
    """Measure where ``data`` sits (size x similarity to the pretraining data) and say what to train, like
    ``tlzoo advise``; returns a :class:`tlzoo.advice.Advice` (``strategy_spec``, ``command``, ``reasons``,
    ``alternatives``, ``evidence``; ``to_dict()`` is ``--json``'s record). To check the advice as ``--verify``
    does, give :func:`compare` ``strategies=",".join([advice.strategy_spec, *advice.alternatives])``.

    ``data_settings`` are advise's data options: ``image_size``, ``seed``, ``test_split``, ``weights``.
    """
    from pathlib import Path

    from .advice import advise as run_advice, data_settings as declared
    from .images.datasets import ensure_digits
    from .errors import UsageError
    from .images.split import default_data_root

    settings = declared()
    unknown = sorted(set(data_settings) - {s.name for s in settings})
    if unknown:
        raise UsageError(f"unknown advise option(s) {', '.join(unknown)}; its data options are: "
                         f"{', '.join(s.name for s in settings)}")  # fmt: skip
    values = {s.name: s.check(data_settings.get(s.name, s.default)) for s in settings}
    names = [b.strip() for b in backbones.split(",")] if isinstance(backbones, str) else list(backbones)
    source = Path(data) if data is not None else ensure_digits(default_data_root())
    return run_advice(source, [n for n in names if n], budget_minutes=budget_minutes, reporter=_reporter(verbose),
                      **values)  # fmt: skip


def export(run: Any, format: str = "onnx", out: Any = None, **options: Any) -> dict[str, Any]:
    """Export a run directory like ``tlzoo export``; returns the exporter's report (with ``path``)."""
    from .backbone import import_object
    from .registry import get_registry
    from .runs.trained import load_run

    spec = get_registry().exporter(format)
    return dict(import_object(spec.exporter, f"exporter {spec.name}")(load_run(run), out, options))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'tlzoo' has no attribute {name!r}")
