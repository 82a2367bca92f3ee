"""The framework adapter contract: everything framework-specific, behind one interface.

A framework plugin registers a :class:`tlzoo.FrameworkSpec` (``register_frameworks``)
whose ``adapter`` names a :class:`FrameworkAdapter`. Core never asks which
framework a backbone is written in; it asks the backbone's adapter::

    adapter = adapter_for(spec.framework)
    backbone = adapter.wrap(spec, model, input_size, weights)

tlzoo's torch and Keras support are ordinary plugins of this kind
(``tlzoo_torch``, ``tlzoo_keras``); ``tests/numpy_framework.py`` is a complete
third one in a hundred lines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeAlias

from .errors import PluginError, UsageError
from .plugins import load_object
from .specs import BackboneSpec, FrameworkSpec, WeightsSpec

if TYPE_CHECKING:  # numpy is not on the path of `tlzoo list-backbones`, which reads weights caches from here
    import numpy as np

    from .images.decode import ImageDecoder
    from .images.decoders import GpuDecoder

# The types below live in modules that use adapters (tlzoo.backbone, tlzoo.training.engine,
# tlzoo.weights); naming them here as Any keeps the module graph free of cycles.
Backbone = Any  # tlzoo.backbone.Backbone
Engine = Any  # tlzoo.training.engine.Engine
ResolvedWeights = Any  # tlzoo.weights.ResolvedWeights

# What a head trainer returns: the dense layers' weights (in, out) and biases, and one history row per epoch.
MLPResult: TypeAlias = "tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]"


class FrameworkAdapter(ABC):
    """One framework's side of tlzoo. Subclass it in the framework's plugin.

    Methods may import the framework; the adapter object itself is created only
    when a model of this framework is built, trained, loaded or exported.
    """

    #: The checkpoint file a trained classifier is saved to, in the framework's safe format
    #: (loadable without executing code: torch state dicts with ``weights_only``, ``.keras`` in safe mode).
    model_file: str = "model.bin"

    @abstractmethod
    def seed(self, seed: int) -> None:
        """Seed the framework's generators, before a backbone is built (reproducible random init)."""

    @abstractmethod
    def wrap(self, spec: BackboneSpec, model: Any, input_size: tuple[int, int],
             weights: ResolvedWeights | None) -> Backbone:  # fmt: skip
        """Wrap the model a builder returned in a :class:`tlzoo.backbone.Backbone` (units, freezing, taps,
        feature extraction). Raise :class:`tlzoo.errors.UsageError` when it is not this framework's model."""

    #: The training engine class (a :class:`tlzoo.training.engine.Engine`); :meth:`engine` makes one.
    engine_class: type | None = None

    def engine(self, backbone: Backbone, n_classes: int, *, tap: int | None, dropout: float, seed: int,
               device: str) -> Engine:  # fmt: skip
        """The training engine for a classifier on ``backbone``: ``engine_class``, unless overridden."""
        if self.engine_class is None:
            raise PluginError(f"{type(self).__name__} names no engine_class and does not override engine()")
        return self.engine_class(backbone, n_classes, tap=tap, dropout=dropout, seed=seed, device=device)

    @abstractmethod
    def train_mlp(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, sizes: list[int], *,
                  dropout: float, epochs: int, lr: float, weight_decay: float, patience: int, batch_size: int,
                  seed: int, on_epoch: Callable[[dict[str, Any]], None] | None) -> MLPResult:  # fmt: skip
        """Train dense layers ``sizes`` (ReLU between, dropout before each) on standardized features with
        AdamW, early-stopped on validation loss (best epoch kept). Used for ``--head mlp``. A plain function
        with this signature may be assigned instead: ``train_mlp = staticmethod(my_train_mlp)``.

        Under ``--balance weights`` it is also given ``class_weight=`` (one float32 per class) for its training
        loss; a trainer without that keyword is refused in one line for that run only. On a multi-label set it
        is given ``multilabel=True`` instead: ``y`` and ``y_val`` are 0/1 matrices (images x labels), the loss
        binary cross-entropy on each output, with ``pos_weight=`` (one float32 per label, for its positives)
        under ``--balance weights``; a trainer without ``multilabel`` is refused in one line."""

    @abstractmethod
    def load_classifier(self, run_dir: Path, meta: Any) -> Any:
        """The classifier a finished run saved (``meta``: its :class:`tlzoo.runs.runfiles.ClassifierMeta`),
        loaded without executing code from the file."""

    def classifier_from_head(self, backbone: Backbone, tap: int | None, head: Any) -> Any:
        """The classifier a head-only run describes: ``backbone`` (frozen, pretrained) with the dense layers of
        ``head`` (a :class:`tlzoo.heads.HeadParams`) on its features at unit ``tap``, in inference
        mode, as :meth:`load_classifier` would return it. Frameworks whose spec sets ``head_only_runs``
        implement it."""
        raise PluginError(f"framework {backbone.spec.framework}: its adapter does not assemble a classifier from a "
                          f"head, but its spec sets head_only_runs")  # fmt: skip

    @abstractmethod
    def classifier_logits(self, model: Any, batch: np.ndarray) -> np.ndarray:
        """Logits of a loaded classifier for a preprocessed float32 NHWC batch (on the host; the classifier runs
        where :meth:`classifier_to` placed it)."""

    def inference_device(self, request: str) -> str:
        """Where ``tlzoo predict`` and ``tlzoo evaluate --device REQUEST`` run a run directory's classifier
        (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``N``, ``mps``), as the framework names it. Called before the
        classifier is loaded, so that a framework that fixes its devices when it starts can do so here. Raises
        UsageError for a device this machine or framework lacks. Default: the CPU alone."""
        if request.strip().lower() not in ("auto", "cpu"):
            raise UsageError(f"--device {request}: {type(self).__name__} runs trained classifiers on the CPU only; "
                             f"use --device cpu (or auto)")  # fmt: skip
        return "cpu"

    def classifier_to(self, model: Any, device: str) -> Any:
        """The loaded classifier placed on ``device`` (from :meth:`inference_device`). Default: as it is."""
        return model

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` CPU threads for the framework's operations in this process (``--threads``)."""
        raise UsageError(f"{type(self).__name__} cannot set the number of threads; leave --threads out")

    def download(self, weights: WeightsSpec, dest: Path) -> None:
        """Fetch ``weights.url`` to ``dest`` (its hash is checked afterwards by tlzoo)."""
        import urllib.request

        from .files import atomic_write

        def fetch(tmp: Path) -> None:
            with urllib.request.urlopen(weights.url) as response, open(tmp, "wb") as f:  # noqa: S310 (https URLs from specs)
                while block := response.read(1 << 20):
                    f.write(block)

        atomic_write(dest, fetch)

    def find_local(self, weights: WeightsSpec, dest: Path) -> bool:
        """Put at ``dest`` a copy of ``weights`` that another tool already keeps on this machine (timm's: a
        Hugging Face cache), and say whether there was one. Asked before any download, offline too."""
        return False

    def import_file(self, source: Path, dest: Path) -> None:
        """Put a user's weights file at ``dest`` for ``tlzoo weights import FILE --backbone ID``: copied as it is
        by default; an adapter may check or convert it (timm's stores every tag as safetensors). Never execute
        code from the file."""
        from .files import atomic_copy

        atomic_copy(source, dest)

    def converter(self, format: str) -> Callable[..., None] | None:
        """The function that converts a loaded classifier to an export format (``onnx``), or None.

        Exporters call it as ``convert(model, path, *, input_size, preprocessing, output, opset, batch,
        raw_input)``; what each keyword means is the exporter's documented contract. tlzoo's ONNX exporter always
        passes ``raw_input=False`` and joins its own raw-input front (``tlzoo_onnx.front``) to the result.
        """
        return None

    def pinned_allocator(self, device: str) -> Callable[[tuple[int, ...], Any], np.ndarray] | None:
        """``allocate(shape, dtype)``: host memory that ``device`` copies from without the host waiting (pinned
        memory on a CUDA device), as a numpy array; None where plain memory serves as well (a CPU)."""
        return None

    def image_decoder(self, device: str) -> ImageDecoder | None:
        """A :class:`tlzoo.images.decode.ImageDecoder` that decodes JPEGs on ``device`` (the run's training engine's
        device: ``cuda:0``, ``cpu``...), or None to leave every image to Pillow. Give one only where it works
        (try it on a small JPEG first), and only where its framework spec's ``gpu_decoder`` names it."""
        return None


_adapters: dict[str, FrameworkAdapter] = {}


def adapter_for(framework: str) -> FrameworkAdapter:
    """The adapter of a registered framework, imported and created on first use."""
    from .registry import get_registry

    spec = get_registry().framework(framework)
    cached = _adapters.get(spec.name)
    if cached is not None and getattr(cached, "_tlzoo_spec", None) is spec:
        return cached
    target = load_object(spec.adapter, f"adapter of framework {spec.name}")
    try:
        adapter = target() if isinstance(target, type) else target
    except Exception as exc:
        raise PluginError(f"the adapter of framework {spec.name} ({spec.adapter}) failed to start: "
                          f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    if not isinstance(adapter, FrameworkAdapter):
        raise PluginError(f"the adapter of framework {spec.name} ({spec.adapter}) is a {type(adapter).__name__}, "
                          f"not a tlzoo.adapters.FrameworkAdapter")  # fmt: skip
    adapter._tlzoo_spec = spec  # type: ignore[attr-defined]
    _adapters[spec.name] = adapter
    return adapter


def framework_spec(framework: str) -> FrameworkSpec:
    from .registry import get_registry

    return get_registry().framework(framework)


def weights_cache_dir(framework: str) -> Path:
    """Where a framework caches pretrained weights (computed without importing the framework)."""
    spec = framework_spec(framework)
    if not spec.weights_cache:
        raise UsageError(f"framework {framework} keeps no weights cache")
    return Path(load_object(spec.weights_cache, f"weights cache of framework {framework}")())


def gpu_decoder(framework: str) -> GpuDecoder:
    """``framework``'s GPU decoder for the input path (:mod:`tlzoo.images.decoders`): its name, read from the
    framework spec's ``gpu_decoder`` without importing the framework, and its adapter's ``image_decoder``."""
    from .images.decoders import GpuDecoder

    where = framework_spec(framework).gpu_decoder
    name = load_object(where, f"the {framework} framework's gpu_decoder")() if where else None
    return GpuDecoder(framework, str(name) if name else None, lambda device: adapter_for(framework).image_decoder(device))
