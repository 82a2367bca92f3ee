"""One interface over the backbones of every framework.

``get_backbone()`` resolves a name, checks the weights, imports the plugin's
builder and has the framework's adapter (:mod:`tlzoo.adapters`) wrap the model
in a :class:`Backbone`. Framework code lives in the framework plugins
(``tlzoo_torch``, ``tlzoo_keras``); it is imported only when a model is built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import freeze as freeze_mod
from .errors import PluginError, TlzooError, UsageError, WeightsError, one_line
from .plugins import load_object
from .registry import get_registry
from .specs import BackboneSpec, WeightsSpec
from .weights import ResolvedWeights, named_weights, resolve


@dataclass(frozen=True)
class Unit:
    """A freeze unit of a built model (see :mod:`tlzoo.freeze`)."""

    index: int  # 1-based, as printed by `tlzoo describe`
    name: str
    kind: str
    params: int


class Backbone(ABC):
    """A built backbone: the framework's model plus what tlzoo knows about it."""

    framework: str

    def __init__(self, spec: BackboneSpec, model: Any, input_size: tuple[int, int], weights: ResolvedWeights | None):
        self.spec = spec
        self.model = model
        self.input_size = input_size
        self.weights = weights
        self.frozen_units = 0

    @property
    def name(self) -> str:
        return self.spec.id

    @property
    def pretrained(self) -> bool:
        return self.weights is not None

    @property
    @abstractmethod
    def units(self) -> list[Unit]:
        """The freeze units in forward order."""

    @property
    @abstractmethod
    def num_params(self) -> int: ...

    @property
    @abstractmethod
    def trainable_params(self) -> int: ...

    @abstractmethod
    def _freeze_units(self, count: int, whole: bool, all_norms: bool) -> None: ...

    @abstractmethod
    def feature_model(self, tap: int | None = None) -> Any:
        """The framework model mapping preprocessed images to pooled features.

        ``tap`` is a 0-based unit index: the globally average-pooled output of
        that unit (its normalization layer's output when it has one) instead
        of the backbone's final features.
        """

    def inference_model(self, tap: int | None = None, device: str | None = None) -> Any:
        """:meth:`feature_model` for frozen inference only, on ``device`` (as the framework's engine names it;
        None: where the backbone is). A framework may return an equivalent model made faster for inference
        (torch folds each batch norm into the convolution before it, on a copy: the backbone's own modules keep
        their weights, and are only moved to ``device`` when there was nothing to fold)."""
        return self.feature_model(tap)

    @abstractmethod
    def parameter_arrays(self) -> list[np.ndarray]:
        """Every weight of the backbone, in a fixed order."""

    def weights_digest(self) -> str:
        """sha256 over the backbone's weights: what its features depend on, beyond the input."""
        import hashlib

        h = hashlib.sha256()
        for array in self.parameter_arrays():
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()

    @abstractmethod
    def _run(self, model: Any, batch: np.ndarray) -> np.ndarray:
        """Run a feature model on a preprocessed NHWC float32 batch."""

    def feature_width(self) -> int:
        """The width of the pooled features, measured on one blank image at the input size."""
        h, w = self.input_size
        blank = self.preprocess(np.zeros((1, h, w, 3), np.uint8))
        return int(np.asarray(self._run(self.feature_model(None), blank)).shape[1])

    def unit_names(self) -> list[str]:
        return [u.name for u in self.units]

    def freeze(self, value: str | int | None, *, all_norms: bool = False) -> int:
        """Freeze the leading units named by ``value`` (see :mod:`tlzoo.freeze`); returns how many.

        ``all_norms`` also freezes every normalization layer, which then stays in inference mode
        (two-stage's second stage: the head from stage 1 keeps seeing the features it learnt on).
        """
        count = freeze_mod.parse_freeze(value, self.unit_names())
        whole = str(value).strip().lower() == freeze_mod.ALL
        self._freeze_units(count, whole, all_norms)
        self.frozen_units = count
        return count

    def resolve_tap(self, tap: str | int | None) -> int | None:
        if tap is None or str(tap).strip() == "":
            return None
        return freeze_mod.parse_unit(tap, self.unit_names())

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 images (N, H, W, 3) already at input size -> float32 NHWC model input."""
        from .images.normalize import normalize

        return normalize(images, self.spec.preprocessing)

    def run_images(self, model: Any, images: np.ndarray) -> np.ndarray:
        """Features of RGB uint8 images ``(N, H, W, 3)`` at input size by ``model`` (an :meth:`inference_model`):
        normalized here (:meth:`preprocess`), then :meth:`_run`. A framework may normalize on the model's
        device instead, by the same arithmetic (torch on a GPU: a quarter of the bytes cross, no host pass)."""
        return self._run(model, self.preprocess(images))  # type: ignore[attr-defined,no-any-return]

    def extract_features(self, images: np.ndarray, *, tap: int | None = None, batch_size: int = 32,
                         progress: Any = None, run: Any = None) -> np.ndarray:  # fmt: skip
        """Pooled float32 features ``(N, D)`` of RGB uint8 images at input size, in inference mode;
        ``progress(n)`` is called after each batch. ``run`` is a feature engine's runner
        (:mod:`tlzoo.feature_engines`; default: this framework's own feature model at ``tap``); one whose
        ``takes_uint8`` is true is given the images as they are and normalizes them itself."""
        if run is None:
            model = self.inference_model(tap)

            def run(batch: np.ndarray) -> np.ndarray:
                return self.run_images(model, batch)

            run.takes_uint8 = True  # type: ignore[attr-defined]
        raw = getattr(run, "takes_uint8", False)
        out = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            out.append(np.asarray(run(batch if raw else self.preprocess(batch))).astype(np.float32, copy=False))
            if progress is not None:
                progress(len(batch))
        if not out:
            raise UsageError("no images to extract features from")
        return np.concatenate(out, axis=0)


def check_input_size(spec: BackboneSpec, size: int | tuple[int, int] | None,
                     weights: WeightsSpec | None = None) -> tuple[int, int]:  # fmt: skip
    """``size`` checked against the backbone's limits; None: the size ``weights`` were trained at."""
    if size is None:
        return spec.input_size_for(weights)
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(hw) < spec.min_input_size:
        raise UsageError(
            f"image size {hw[0]}x{hw[1]} is below {spec.id}'s minimum of "
            f"{spec.min_input_size}x{spec.min_input_size}"
        )
    step = spec.input_multiple
    for side in sorted(set(hw)):
        if side % step:
            below, above = max(step, side // step * step), (side // step + 1) * step
            raise UsageError(f"image size {side} does not fit {spec.id}: its image sizes are multiples of {step} "
                             f"(its patch size); use {below} or {above}")  # fmt: skip
    return hw


import_object = load_object  # the name plugins and tests used before tlzoo.plugins.load_object


def get_backbone(
    name: str | BackboneSpec,
    *,
    pretrained: bool | str | ResolvedWeights = False,
    framework: str | None = None,
    input_size: int | tuple[int, int] | None = None,
    seed: int | None = None,
) -> Backbone:
    """Build a backbone by name, like ``timm.create_model``.

    ``pretrained``: False for random initialisation, True (or ``"auto"``) for
    its ImageNet weights (preferring a file already on disk), a weights tag
    such as ``"IMAGENET1K_V1"``, the path of a local weights file, or weights already resolved.
    ``seed`` seeds the framework first, so a random initialisation is reproducible.
    """
    spec = name if isinstance(name, BackboneSpec) else get_registry().resolve(name, framework)
    if isinstance(name, str) and pretrained is not False and not isinstance(pretrained, ResolvedWeights):
        # "timm/resnet50.a1_in1k", as timm names it: the tag is the weights pretrained=True asks for
        pretrained = named_weights(name, "auto" if pretrained is True else str(pretrained), "pretrained")
    if isinstance(pretrained, ResolvedWeights):
        weights: ResolvedWeights | None = pretrained
    else:
        weights = resolve(spec, ("auto" if pretrained else None) if isinstance(pretrained, bool) else pretrained)
    size = check_input_size(spec, input_size, spec.weights_by_tag(weights.tag) if weights else None)
    backbone = build(spec, weights, size, seed=seed)
    # Parameter counts are declared at the spec's input size: a ViT's position embeddings grow with the image.
    at_spec_size = tuple(backbone.input_size) == tuple(spec.input_size)
    if (spec.id, at_spec_size) not in _checked:
        problems = spec_mismatches(spec, backbone, count_params=at_spec_size)
        if problems:
            owner = get_registry().provider(spec.id).get("name", "?")
            raise PluginError(f"plugin {owner!r}: the spec of {spec.id} does not match the model its builder makes: "
                              f"{'; '.join(problems)}")  # fmt: skip
        _checked.add((spec.id, at_spec_size))
    return backbone


def build(spec: BackboneSpec, weights: ResolvedWeights | None, size: tuple[int, int], *,
          seed: int | None = None) -> Backbone:  # fmt: skip
    """Call the spec's builder and have its framework's adapter wrap the model, without checking the spec
    against it (:func:`get_backbone` does; the spec generator fills the spec in from it)."""
    from .adapters import adapter_for

    adapter = adapter_for(spec.framework)
    if seed is not None:
        adapter.seed(seed)
    builder = load_object(spec.builder, f"builder of {spec.id}")
    try:
        model = builder(spec=spec, weights=str(weights.path) if weights else None, input_size=size)
    except TlzooError:
        raise
    except Exception as exc:
        if weights is None:
            raise PluginError(f"the builder of {spec.id} ({spec.builder}) failed: {type(exc).__name__}: "
                              f"{one_line(exc)}") from exc  # fmt: skip
        raise WeightsError(weights_failure(weights.path, spec, exc)) from exc
    return adapter.wrap(spec, model, size, weights)


_checked: set[tuple[str, bool]] = set()  # (spec id, built at its input size) already checked in this process


def spec_mismatches(spec: BackboneSpec, backbone: Backbone, *, count_params: bool = True) -> list[str]:
    """Where a spec's static metadata disagrees with the built model: feature_dim, num_params, units
    (their names only, without ``count_params``: a model built at another input size than the spec's)."""
    problems = []
    dim = backbone.feature_width()
    if dim != spec.feature_dim:
        problems.append(f"feature_dim is {spec.feature_dim} but the model's pooled features have {dim}")
    if count_params and backbone.num_params != spec.num_params:
        problems.append(f"num_params is {spec.num_params:,} but the model has {backbone.num_params:,}")
    if spec.units:
        built = backbone.units
        if len(built) != len(spec.units):
            problems.append(f"units lists {len(spec.units)} but the model has {len(built)} freeze units")
        else:
            for declared, real in zip(spec.units, built):
                if declared.name != real.name or (count_params and declared.params != real.params):
                    problems.append(f"unit {real.index} is {declared.name} ({declared.params:,} parameters) in the "
                                    f"spec but {real.name} ({real.params:,}) in the model")  # fmt: skip
                    break
    return problems


def weights_failure(path: Any, spec: BackboneSpec, exc: BaseException) -> str:
    """Why a weights file did not load, in words a user can act on."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "weights only" in text.lower() or "weightsunpickler" in text.lower() or type(exc).__name__ == "UnpicklingError":
        detail = next((line for line in lines if "Unsupported" in line or "WeightsUnpickler" in line), lines[0] if lines else "")
        return (f"{path} was refused: loading it would create Python objects, not only tensors ({detail[:200]}). "
                f"tlzoo never unpickles arbitrary objects; save a plain state dict "
                f"(torch.save(model.state_dict(), path)) and use that file")  # fmt: skip
    if any(k in text for k in ("Missing key", "Unexpected key", "size mismatch", "shape", "layer")):
        first = " ".join(text.split())[:240]
        return f"{path} does not fit {spec.id} ({first}); is it a weights file for another architecture?"
    return f"{path} could not be loaded into {spec.id}: {type(exc).__name__}: {' '.join(text.split())[:240]}"
