"""The run's model, each part made on first use: its weights, backbone, training engine and JPEG decoder, and the
key its features are cached under. A feature-extract run whose features are all cached builds none of them."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from .. import feature_engines

from ..adapters import adapter_for, framework_spec, gpu_decoder
from ..backbone import Backbone, get_backbone
from ..freeze import parse_unit
from ..images import decoders
from ..images.decode import ImageDecoder, recipe as decode_recipe
from ..specs import BackboneSpec, Preprocessing
from ..version import __version__
from ..weights import ResolvedWeights, file_digest, published as published_weights
from ..weights import resolve as resolve_weights
from .config import TrainConfig
from .engine import Engine
from .reporter import Reporter


class Model:
    """The run's weights, backbone and training engine, each made on first use: a feature-extract run whose
    features are all cached and whose backbone is recorded by reference builds none of them (and imports
    no framework)."""

    def __init__(self, spec: BackboneSpec, config: TrainConfig, size: tuple[int, int], n_classes: int) -> None:
        self.spec, self.config, self.size, self.n_classes = spec, config, size, n_classes
        self.tap = _tap(spec, config, self)

    @cached_property
    def weights(self) -> ResolvedWeights | None:
        """The pretrained weights file, checked against its published hash (None: random initialisation)."""
        return resolve_weights(self.spec, None if self.config.strategy == "scratch" else self.config.weights)

    @cached_property
    def preprocessing(self) -> Preprocessing:
        """The backbone's preprocessing with the resize its weights were published with, or ``--resize``."""
        resize = None if self.config.resize == "auto" else self.config.resize
        # scratch loads no weights (its --weights is not used): it decodes as --weights none does, so it shares
        # the decoded-pixel store with the other strategies of a compare.
        weights = None if self.config.strategy == "scratch" else self.config.weights
        return self.spec.preprocessing_for(published_weights(self.spec, weights), resize)

    @cached_property
    def weights_sha256(self) -> str | None:
        return file_digest(self.weights.path, "sha256") if self.weights is not None else None

    @cached_property
    def backbone(self) -> Backbone:
        return get_backbone(self.spec, pretrained=self.weights or False, input_size=self.size, seed=self.config.seed)

    @cached_property
    def engine(self) -> Engine:
        return adapter_for(self.spec.framework).engine(self.backbone, self.n_classes, tap=self.tap,
                                                       dropout=self.config.dropout, seed=self.config.seed,
                                                       device=self.config.device)  # fmt: skip

    @cached_property
    def decoder(self) -> ImageDecoder | None:
        """Who decodes the run's JPEGs besides Pillow (``--decoder``; see :mod:`tlzoo.images.decoders`). Where no
        CUDA device is possible it is None without building anything."""
        cfg = self.config
        if cfg.decoder != "gpu" and decoders.predicted(cfg.decoder, cfg.device, self.gpu_decoder) is None:
            return None
        own = cfg.strategy != "feature-extract" or cfg.feature_engine in (feature_engines.FRAMEWORK, feature_engines.AUTO)
        return decoders.resolve(cfg.decoder, self.gpu_decoder, self.engine.device if own else None)

    @cached_property
    def gpu_decoder(self) -> decoders.GpuDecoder:
        return gpu_decoder(self.spec.framework)

    def decoder_for(self, reporter: Reporter) -> ImageDecoder | None:
        """:attr:`decoder`, said once when it is not Pillow."""
        decoder = self.decoder
        if decoder is not None and not self.__dict__.get("_decoder_said"):
            self.__dict__["_decoder_said"] = True
            reporter.info(f"JPEGs decoded on the GPU by {decoder.name}, other files by Pillow (--decoder cpu: all by "
                          f"Pillow)")  # fmt: skip
        return decoder

    @property
    def built(self) -> bool:
        return "backbone" in self.__dict__

    @property
    def has_engine(self) -> bool:
        return "engine" in self.__dict__

    @property
    def units(self) -> int:
        return len(self.spec.units) if self.spec.units else len(self.backbone.units)

    @property
    def device(self) -> str:
        """Where the run computed: the engine's device, or the CPU for a run that only fitted a head."""
        return self.engine.device if self.has_engine else "cpu"

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Host memory the engine's device copies from without waiting (pinned on CUDA; plain elsewhere)."""
        allocate = adapter_for(self.spec.framework).pinned_allocator(self.engine.device)
        return allocate(shape, dtype) if allocate is not None else np.empty(shape, dtype)

    @property
    def head_only(self) -> bool:
        """Whether the run keeps its head alone and names its backbone by weights (see :mod:`tlzoo.runs.runfiles`):
        feature-extract on published weights, in a framework whose adapter can assemble the classifier again."""
        return (self.config.strategy == "feature-extract" and self.weights is not None
                and not self.weights.tag.startswith("file:") and framework_spec(self.spec.framework).head_only_runs)

    def feature_key(self, decoder: str | None) -> dict[str, Any]:
        """Everything the features depend on besides the image files (the cache key's model half); ``decoder``
        names the JPEGs' decoder when it is not Pillow."""
        weights = {"sha256": self.weights_sha256} if self.weights is not None else {"random": self.backbone.weights_digest()}
        # auto keeps its features with the framework's: every engine it may pick is checked against them
        engine = self.config.feature_engine
        own = engine in (feature_engines.FRAMEWORK, feature_engines.AUTO)
        return {"backbone": self.spec.id, "weights": weights, "tap": self.tap, "size": list(self.size),
                "preprocessing": self.preprocessing.to_dict(), "decode": decode_recipe(self.preprocessing, decoder),
                "tlzoo": __version__,
                **({"engine": engine} if not own else {})}  # fmt: skip


def _tap(spec: BackboneSpec, config: TrainConfig, model: Model) -> int | None:
    if config.tap is None or not str(config.tap).strip():
        return None
    if spec.units:
        return parse_unit(config.tap, [u.name for u in spec.units])
    return model.backbone.resolve_tap(config.tap)
