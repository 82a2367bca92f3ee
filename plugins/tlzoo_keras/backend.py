"""Freeze units, taps and feature extraction for Keras backbones.

A functional Keras model lists its layers in topological (forward) order, so
units are read straight off ``model.layers``. Freezing sets ``trainable=False``
on a unit's layers; a frozen BatchNormalization layer then runs in inference
mode (Keras 3 semantics), just like tlzoo's frozen torch norms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np  # noqa: E402

from .quiet import keras  # noqa: E402  (TensorFlow without its start-up noise)

from tlzoo.backbone import Backbone, Unit  # noqa: E402
from tlzoo.errors import UsageError  # noqa: E402

WEIGHT_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.Dense,
)
NORM_LAYERS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)


@dataclass
class KerasUnit:
    name: str
    kind: str
    layers: list[Any] = field(default_factory=list)
    last_member: str = ""

    @property
    def params(self) -> int:
        return sum(int(np.prod(w.shape)) for layer in self.layers for w in layer.weights)


def keras_units(model: keras.Model, unit_modules: tuple[str, ...] = ()) -> list[KerasUnit]:
    """Weight layers in forward order, each with the layers with weights that follow it (normalization);
    or, when the spec names ``unit_modules``, a unit starts at each layer those patterns match."""
    from tlzoo.freeze import matches_unit_modules

    def starts_unit(layer: Any) -> bool:
        if unit_modules:
            return matches_unit_modules(layer.name, unit_modules)
        return isinstance(layer, WEIGHT_LAYERS)

    units: list[KerasUnit] = []
    leading: list[Any] = []
    for layer in model.layers:
        if starts_unit(layer):
            unit = KerasUnit(name=layer.name, kind=type(layer).__name__, layers=[*leading, layer], last_member=layer.name)
            units.append(unit)
            leading = []
        elif unit_modules and units and not isinstance(layer, keras.layers.InputLayer):
            # a block runs until the next one starts; its output (for --tap) is its last layer's
            if layer.weights:
                units[-1].layers.append(layer)
            units[-1].last_member = layer.name
        elif layer.weights:
            # Normalization layers join the weight layer before them; so does any other layer
            # with weights (EfficientNet's input Normalization joins the first unit).
            if units:
                units[-1].layers.append(layer)
                if isinstance(layer, NORM_LAYERS):
                    units[-1].last_member = layer.name
            else:
                leading.append(layer)
    return units


class KerasBackbone(Backbone):
    framework = "keras"

    def __init__(self, spec, model, input_size, weights):  # type: ignore[no-untyped-def]
        if not isinstance(model, keras.Model):
            raise UsageError(f"builder of {spec.id} returned {type(model).__name__}, not a keras.Model")
        super().__init__(spec, model, input_size, weights)
        self._units = keras_units(model, spec.unit_modules)

    @property
    def units(self) -> list[Unit]:
        return [Unit(index=i + 1, name=u.name, kind=u.kind, params=u.params) for i, u in enumerate(self._units)]

    @property
    def num_params(self) -> int:
        return int(self.model.count_params())

    @property
    def trainable_params(self) -> int:
        return int(sum(np.prod(w.shape) for w in self.model.trainable_weights))

    def _freeze_units(self, count: int, whole: bool, all_norms: bool) -> None:
        self.model.trainable = True
        for layer in self.model.layers:
            layer.trainable = True
        for unit in self._units[:count]:
            for layer in unit.layers:
                layer.trainable = False
        if all_norms:
            for layer in self.model.layers:
                if isinstance(layer, NORM_LAYERS):
                    layer.trainable = False  # Keras 3: a frozen BatchNormalization runs in inference mode
        if whole:
            self.model.trainable = False

    def feature_model(self, tap: int | None = None) -> keras.Model:
        if tap is None:
            return self.model
        layer = self.model.get_layer(self._units[tap].last_member)
        rank = len(layer.output.shape)
        if rank == 3:  # (N, tokens, C)
            pooled = keras.layers.GlobalAveragePooling1D(name="tap_pool")(layer.output)
        elif rank == 4:
            fmt = "channels_first" if self.spec.tap_layout == "channels_first" else "channels_last"
            pooled = keras.layers.GlobalAveragePooling2D(data_format=fmt, name="tap_pool")(layer.output)
        else:
            pooled = layer.output
        return keras.Model(self.model.input, pooled, name=f"{self.model.name}_tap{tap + 1}")

    def parameter_arrays(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model.get_weights()]

    def _run(self, model: Any, batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(batch, training=False))
