"""The kerasnet model (imported only when tlzoo builds the backbone).

tlzoo's rules for Keras builders: a functional model (its layers in forward order are the
freeze units), stable layer names (a run's checkpoint and ``--tap`` find layers by name),
and nothing that Keras' safe mode refuses to load (no Lambda layers).
"""

from __future__ import annotations

from typing import Any

import keras


def build(*, spec: Any, weights: str | None, input_size: tuple[int, int]) -> keras.Model:
    inputs = keras.Input((*input_size, 3), name="image")
    x = inputs
    for i, (filters, stride) in enumerate(((16, 1), (32, 2), (32, 2)), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, features, name="kerasnet")
    if weights is not None:
        model.load_weights(weights)  # .weights.h5: arrays only, no code
    return model
