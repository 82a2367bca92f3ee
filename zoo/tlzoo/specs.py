"""Plain-data descriptions of backbones, their weights and their preprocessing.

Everything here is standard library only: a spec can be listed, filtered and
described without importing torch or TensorFlow. The code that builds the model
is named by ``BackboneSpec.builder`` ("module:function") and imported only when
the backbone is actually built.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Literal

TAP_LAYOUTS = ("", "channels_first", "channels_last")
RESIZE_POLICIES = ("squash", "crop", "pad")
INTERPOLATIONS = ("bilinear", "bicubic")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the backbone's input tensor.

    The decoded image is brought to the input size by ``resize`` (with ``interpolation``, antialiased
    as Pillow and torchvision do), its channels put in ``channel_order``, its values scaled to
    ``0..value_range`` (1.0 or 255.0), then ``(x - mean) / std`` per channel (mean and std in that
    channel order and value range). ``mode`` names the convention for people: ``torch``
    (torchvision's ImageNet mean/std), ``caffe`` (BGR, mean subtraction on 0..255), ``tf`` (scaled to
    -1..1) or ``raw`` (the model normalizes itself).

    ``resize``, as fastai names them: ``squash`` stretches the whole image to the input size (with a
    ``crop_fraction`` below 1, its centre ``crop_fraction`` of each side: timm's ``squash`` crop mode);
    ``crop`` scales it, keeping its aspect, until it covers the input size divided by
    ``crop_fraction``, then takes the centre (torchvision's and timm's evaluation transform:
    ``Resize(256)`` then ``CenterCrop(224)`` is ``crop`` with 224/256); ``pad`` scales it to fit
    inside the input size and fills the rest with the mean colour. A description written before
    these fields existed means ``squash`` and ``bilinear``, which is what it was made with.
    """

    mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: Literal["RGB", "BGR"] = "RGB"
    value_range: float = 1.0
    interpolation: str = "bilinear"
    resize: str = "squash"
    crop_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocessing interpolation {self.interpolation!r} is not supported: use "
                             f"{' or '.join(INTERPOLATIONS)}")  # fmt: skip
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize policy {self.resize!r} is not one of {', '.join(RESIZE_POLICIES)}")
        if not (isinstance(self.crop_fraction, (int, float)) and 0.0 < self.crop_fraction <= 1.0):
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")

    def with_resize(self, resize: str | None = None, *, crop_fraction: float | None = None,
                    interpolation: str | None = None) -> Preprocessing:  # fmt: skip
        """This preprocessing with another resize policy, crop fraction or interpolation (None keeps each; a
        change to ``squash`` or ``pad`` without a crop fraction takes the whole image)."""
        if crop_fraction is None:
            whole = resize in ("squash", "pad") and resize != self.resize
            crop_fraction = 1.0 if whole else self.crop_fraction
        return dataclasses.replace(self, resize=resize or self.resize, crop_fraction=float(crop_fraction),
                                   interpolation=interpolation or self.interpolation)  # fmt: skip

    def pad_colour(self) -> tuple[int, int, int]:
        """The RGB uint8 colour ``pad`` fills with: the mean, so the padding normalizes to zero."""
        mean = list(self.mean[::-1] if self.channel_order == "BGR" else self.mean)
        return tuple(int(round(min(255.0, max(0.0, m * 255.0 / self.value_range)))) for m in mean)  # type: ignore[return-value]

    def resize_text(self) -> str:
        """``crop 0.875 bilinear``: the resize in words, for run summaries and model cards."""
        fraction = f" {self.crop_fraction:g}" if self.resize == "crop" or self.crop_fraction < 1.0 else ""
        return f"{self.resize}{fraction} {self.interpolation}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            mode=data["mode"],
            mean=tuple(data["mean"]),  # type: ignore[arg-type]
            std=tuple(data["std"]),  # type: ignore[arg-type]
            channel_order=data.get("channel_order", "RGB"),
            value_range=float(data.get("value_range", 1.0)),
            interpolation=data.get("interpolation", "bilinear"),
            resize=data.get("resize", "squash"),
            crop_fraction=float(data.get("crop_fraction", 1.0)),
        )


TORCHVISION_IMAGENET = Preprocessing(mode="torch", mean=IMAGENET_MEAN, std=IMAGENET_STD)
KERAS_CAFFE = Preprocessing(
    mode="caffe", mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), channel_order="BGR", value_range=255.0
)
KERAS_TF = Preprocessing(mode="tf", mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), value_range=255.0)
KERAS_TORCH = Preprocessing(mode="torch", mean=IMAGENET_MEAN, std=IMAGENET_STD)
KERAS_RAW = Preprocessing(mode="raw", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), value_range=255.0)


@dataclass(frozen=True)
class WeightsSpec:
    """A pretrained weights file a backbone can load.

    ``file_hash`` is checked before the file is used. For ``sha256`` it may be
    a prefix of at least 8 hex digits (torchvision's file names carry one);
    Keras publishes md5 hashes for its application weights.

    ``resize``, ``crop_fraction`` and ``interpolation`` are the evaluation transform the weights were
    published with (torchvision documents one per tag); ``input_size``, ``mean`` and ``std`` the input
    size and normalization they were trained with, where they differ from the backbone's (timm's tags of
    one architecture do); empty or 0 means the backbone's own (see :meth:`BackboneSpec.preprocessing_for`
    and :meth:`BackboneSpec.input_size_for`). An empty ``file_hash`` means nothing was published to check
    the file against: tlzoo records its sha256 when it is first used and checks it from then on.
    """

    tag: str
    file_name: str
    file_hash: str
    url: str
    hash_algorithm: Literal["sha256", "md5"] = "sha256"
    source: str = ""
    dataset: str = "ImageNet-1K"
    metrics: dict[str, float] = field(default_factory=dict)
    resize: str = ""
    crop_fraction: float = 0.0
    interpolation: str = ""
    input_size: tuple[int, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    license: str = ""

    def __post_init__(self) -> None:
        for name, kind, n in (("input_size", int, 2), ("mean", float, 3), ("std", float, 3)):
            value = tuple(kind(v) for v in getattr(self, name))  # JSON gives lists
            if value and len(value) != n:
                raise ValueError(f"weights {self.tag}: {name} must have {n} values, got {value}")
            object.__setattr__(self, name, value)
        if self.resize and self.resize not in RESIZE_POLICIES:
            raise ValueError(f"weights {self.tag}: resize {self.resize!r} is not one of {', '.join(RESIZE_POLICIES)}")
        if self.interpolation and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"weights {self.tag}: interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if not 0.0 <= float(self.crop_fraction) <= 1.0:
            raise ValueError(f"weights {self.tag}: crop_fraction must be in (0, 1] (0: the backbone's), got {self.crop_fraction}")


@dataclass(frozen=True)
class UnitSpec:
    """One freeze unit: a weight layer (convolution or dense) in forward order.

    ``params`` counts the unit's weight layer and the normalization layers that
    follow it.
    """

    name: str
    kind: str
    params: int


@dataclass(frozen=True)
class BackboneSpec:
    """Everything tlzoo knows about a backbone without building it.

    ``builder`` is ``"module:function"``; the function is called as
    ``builder(spec=spec, weights=PATH_OR_NONE, input_size=(H, W))`` and returns
    the framework's own model that maps a batch of preprocessed images
    (NCHW for torch, NHWC for keras) to pooled features ``(N, feature_dim)``.
    ``weights`` is a local, already verified file, or None for random init.

    Freeze units are the model's weight layers in forward order unless
    ``unit_modules`` names them: patterns (``fnmatch``, one per dot-separated
    part, so ``encoder.layers.*`` matches ``encoder.layers.encoder_layer_0``
    but not its children) of the modules that are units, such as a vision
    transformer's blocks. A torch module matched this way is one unit with its
    whole sub-tree; a matched Keras layer starts a unit that the following
    unmatched layers with weights join. Parameters outside every unit (a class
    token, position embeddings) join the first unit. ``tap_layout`` is the
    layout of a unit's output when ``--tap`` pools it: ``channels_first``
    (N, C, ...), ``channels_last`` (N, ..., C; Swin's stages), or empty for the
    framework's input layout; a 3-D output is always tokens (N, L, C).
    ``input_multiple``: image sizes must be a multiple of this (a ViT's patch).
    """

    name: str
    framework: str
    builder: str
    input_size: tuple[int, int]
    feature_dim: int
    num_params: int
    preprocessing: Preprocessing
    min_input_size: int = 32
    weights: Sequence[WeightsSpec] = ()  # a plugin may give a lazy sequence: its len() must not load it
    units: Sequence[UnitSpec] = ()  # a plugin may give a lazy sequence: its len() must not load it
    family: str = ""
    description: str = ""
    license: str = ""
    source: str = ""
    unit_modules: tuple[str, ...] = ()
    tap_layout: str = ""
    input_multiple: int = 1

    @property
    def id(self) -> str:
        """The framework-qualified id, e.g. ``torch/vgg16``."""
        return f"{self.framework}/{self.name}"

    @property
    def default_weights(self) -> WeightsSpec | None:
        return self.weights[0] if self.weights else None

    def weights_by_tag(self, tag: str) -> WeightsSpec | None:
        for w in self.weights:
            if w.tag.lower() == tag.lower():
                return w
        return None

    def preprocessing_for(self, weights: WeightsSpec | None = None, resize: str | None = None) -> Preprocessing:
        """The preprocessing of these weights (their published resize, crop fraction and interpolation where
        they name one, else the backbone's), with ``resize`` (a user's ``--resize``) overriding the policy."""
        prep = self.preprocessing
        if weights is not None:
            prep = prep.with_resize(weights.resize or None, crop_fraction=weights.crop_fraction or None,
                                    interpolation=weights.interpolation or None)  # fmt: skip
            if weights.mean or weights.std:
                mean, std = weights.mean or prep.mean, weights.std or prep.std  # 3 each: checked by WeightsSpec
                prep = dataclasses.replace(prep, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))
        return prep.with_resize(resize) if resize else prep

    def input_size_for(self, weights: WeightsSpec | None = None) -> tuple[int, int]:
        """The input size these weights were trained at (the backbone's when they name none)."""
        if weights is not None and weights.input_size:
            return (weights.input_size[0], weights.input_size[1])
        return self.input_size

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["weights"] = [dataclasses.asdict(w) for w in self.weights]  # a plugin's lazy sequence, too
        data["units"] = [[u.name, u.kind, u.params] for u in self.units]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        """The inverse of :meth:`to_dict`: how plugins ship their specs as JSON."""
        return cls(
            name=data["name"],
            framework=data["framework"],
            builder=data["builder"],
            input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
            feature_dim=int(data["feature_dim"]),
            num_params=int(data["num_params"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            min_input_size=int(data.get("min_input_size", 32)),
            weights=tuple(WeightsSpec(**w) for w in data.get("weights", ())),
            units=units_from_rows(data.get("units", [])),
            family=data.get("family", ""),
            description=data.get("description", ""),
            license=data.get("license", ""),
            source=data.get("source", ""),
            unit_modules=tuple(str(m) for m in data.get("unit_modules", ())),
            tap_layout=str(data.get("tap_layout", "")),
            input_multiple=int(data.get("input_multiple", 1)),
        )

    def __post_init__(self) -> None:
        if not self.framework or "/" in self.framework:
            raise ValueError(f"{self.name}: framework must be a framework's name (as a plugin registers it), not {self.framework!r}")
        if ":" not in self.builder:
            raise ValueError(f"{self.name}: builder must be 'module:function', not {self.builder!r}")
        if "/" in self.name or not self.name:
            raise ValueError(f"backbone name {self.name!r} must be non-empty and contain no '/'")
        if self.tap_layout not in TAP_LAYOUTS:
            raise ValueError(f"{self.name}: tap_layout must be one of {', '.join(map(repr, TAP_LAYOUTS))}, not {self.tap_layout!r}")
        if isinstance(self.unit_modules, str) or not all(isinstance(m, str) and m for m in self.unit_modules):
            raise ValueError(f"{self.name}: unit_modules must be a tuple of module-name patterns")
        if not isinstance(self.input_multiple, int) or self.input_multiple < 1:
            raise ValueError(f"{self.name}: input_multiple must be a whole number of at least 1")


@dataclass(frozen=True)
class FrameworkSpec:
    """A deep-learning framework backbones can be written in (``register_frameworks``).

    Plain data, like every spec: ``adapter`` is ``"module:attribute"`` naming a
    :class:`tlzoo.adapters.FrameworkAdapter` (class or instance) and is imported
    only when a model is built, trained, loaded or exported. ``weights_cache``
    is ``"module:function"`` returning the folder where the framework caches
    pretrained weights; it must compute the path without importing the
    framework (``tlzoo list-backbones`` shows which weights are on disk).
    ``in_process_multi_device`` says the framework's engine spreads one process
    over several devices itself (``--device 0,1``) instead of one process per
    device under torchrun. ``input_layout`` is the layout of the classifier's
    input tensor (``NCHW`` or ``NHWC``), as exported files record it.
    ``head_only_runs`` says the adapter implements ``classifier_from_head``: a
    feature-extract run with published weights then keeps its head alone and
    records the backbone by id and weights hash (a run whose features are all
    cached then never builds the backbone nor imports the framework).
    ``gpu_decoder`` is ``"module:function"`` returning the name of the GPU JPEG
    decoder the adapter's ``image_decoder`` gives on a CUDA device (its
    versions included), computed without importing the framework: the decode
    recipe of a cached run's features names it. Empty: the framework has none.
    """

    name: str
    adapter: str
    weights_cache: str = ""
    input_layout: str = "NHWC"
    in_process_multi_device: bool = False
    head_only_runs: bool = False
    gpu_decoder: str = ""
    description: str = ""
    modules: tuple[str, ...] = ()  # the framework's top-level modules: a plugin importing them at load is reported
    catalog: bool = False  # a whole external registry (timm's): a plain `tlzoo list-backbones` shows its families

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"framework name {self.name!r} must be non-empty and contain no '/'")
        if ":" not in self.adapter:
            raise ValueError(f"framework {self.name}: adapter must be 'module:attribute', not {self.adapter!r}")
        if self.input_layout not in ("NCHW", "NHWC"):
            raise ValueError(f"framework {self.name}: input_layout must be NCHW or NHWC, not {self.input_layout!r}")


@dataclass(frozen=True)
class ExporterSpec:
    """A format a trained run can be exported to (``tlzoo export FORMAT RUN``).

    ``exporter`` is ``"module:function"`` called as
    ``exporter(run, out, options) -> dict`` (see :func:`tlzoo.hookspecs.register_exporters`).
    """

    def __post_init__(self) -> None:
        from .settings import Setting

        if ":" not in self.exporter:
            raise ValueError(f"exporter {self.name}: exporter must be 'module:function', not {self.exporter!r}")
        if self.runtime and ":" not in self.runtime:
            raise ValueError(f"exporter {self.name}: runtime must be 'module:attribute', not {self.runtime!r}")
        if not all(isinstance(o, Setting) for o in self.options):
            raise ValueError(f"exporter {self.name}: options must be tlzoo.settings.Setting objects")

    name: str
    exporter: str
    file_suffix: str
    description: str = ""
    options: tuple[Any, ...] = ()  # tlzoo.settings.Setting: the format's options, made CLI options by tlzoo export
    runtime: str = ""  # "module:attribute" opening an exported file for predict/evaluate (see register_exporters)
    default_file: str = ""  # the file written in the run directory when no --out is given


@dataclass(frozen=True)
class FeatureEngineSpec:
    """Another way to run a frozen backbone for feature extraction (``register_feature_engines``).

    ``engine`` is ``"module:function"``, imported only when the engine is used and called as
    ``engine(backbone, tap, cache_dir) -> run``: ``backbone`` a :class:`tlzoo.backbone.Backbone`, ``tap`` a
    0-based unit index or None, ``cache_dir`` a folder the engine may keep files in across runs. ``run`` maps
    a batch of preprocessed NHWC float32 images to the same pooled float32 features ``(N, D)`` the
    backbone's own :meth:`~tlzoo.backbone.Backbone.extract_features` gives (the engine checks that); an
    engine that cannot run this backbone raises :class:`tlzoo.errors.UsageError` saying why.

    ``prepared`` (optional, ``"module:function"``) is called as ``prepared(backbone, tap, cache_dir) -> bool``:
    whether the engine's one-off work for this backbone (an export, say) is already in ``cache_dir``. It must
    be cheap: ``--feature-engine auto`` asks it to decide whether trying the engine can pay on a small job.
    Without it, auto treats the engine as not prepared.

    ``reopen`` (optional, ``"module:function"``) lets auto's remembered choice (:mod:`tlzoo.engine_memory`) run
    the engine without building the backbone or importing its framework. A ``run`` that can be reopened has
    an ``entry`` attribute: a JSON-serialisable dict describing its prepared work (a file, its hash, the
    framework's features on a check batch). ``reopen(entry, cache_dir) -> run`` opens it again; it must check
    what it opens (the file's hash, the check batch's features) and raise :class:`tlzoo.errors.UsageError`
    when anything does not match, and auto then builds the backbone and measures again.
    """

    name: str
    engine: str
    description: str = ""
    prepared: str = ""
    reopen: str = ""

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum() or self.name in ("framework", "auto"):
            raise ValueError(f"feature engine name {self.name!r} must be a plain word other than 'framework' and 'auto'")
        for what, value in (("engine", self.engine), ("prepared", self.prepared or ":"), ("reopen", self.reopen or ":")):
            if ":" not in value:
                raise ValueError(f"feature engine {self.name}: {what} must be 'module:function', not {value!r}")


def units_from_rows(rows: list[list[Any]]) -> tuple[UnitSpec, ...]:
    """Turn ``[[name, kind, params], ...]`` (the shipped JSON form) into units."""
    return tuple(UnitSpec(name=str(n), kind=str(k), params=int(p)) for n, k, p in rows)


def load_specs_json(path: str | os.PathLike[str]) -> list[BackboneSpec]:
    """Read ``{"backbones": [spec dict, ...]}`` as written by :meth:`BackboneSpec.to_dict`."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return [BackboneSpec.from_dict(row) for row in data["backbones"]]
