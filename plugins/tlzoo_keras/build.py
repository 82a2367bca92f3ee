"""Builders for keras.applications backbones: include_top=False, global average pooling.

Imported only when a Keras backbone is built.
"""

from __future__ import annotations

from typing import Any

from .quiet import keras  # noqa: E402  (TensorFlow without its start-up noise)

CONSTRUCTORS = {
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "mobilenet_v2": "MobileNetV2",
    "inception_v3": "InceptionV3",
    "efficientnet_b0": "EfficientNetB0",
    "densenet121": "DenseNet121",
    "xception": "Xception",
}


def constructor(name: str) -> Any:
    return getattr(keras.applications, CONSTRUCTORS[name])


def _restart_layer_names() -> None:
    """Keras numbers auto-named layers (conv2d, conv2d_1, ...) per process; restart the count so
    a backbone's unit names are the same whatever was built before it."""
    from keras.src.utils.naming import reset_uids

    reset_uids()


def build(*, spec: Any, weights: str | None, input_size: tuple[int, int]) -> keras.Model:
    _restart_layer_names()
    # A local .h5 path: Keras reads it with h5py (no code execution); None is random init.
    return constructor(spec.name)(
        include_top=False, weights=weights, input_shape=(input_size[0], input_size[1], 3), pooling="avg"
    )
