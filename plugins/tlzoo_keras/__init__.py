"""tlzoo's Keras plugin: the Keras framework adapter and the keras.applications backbones.

The specs are static data (backbones.json, generated from keras.applications by
``python -m tlzoo_keras._generate``); TensorFlow is imported only by
:mod:`tlzoo_keras.adapter` and :mod:`tlzoo_keras.build` when a Keras model is
built, trained, loaded or exported.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from tlzoo import BackboneSpec, FrameworkSpec, hookimpl
from tlzoo.specs import load_specs_json

__version__ = "0.1.0"


@lru_cache(maxsize=1)
def _specs() -> tuple[BackboneSpec, ...]:
    return tuple(load_specs_json(Path(__file__).with_name("backbones.json")))


@hookimpl
def register_backbones() -> list[BackboneSpec]:
    return list(_specs())


def weights_cache() -> Path:
    """``keras.utils.get_file``'s cache, computed without importing Keras: ``$KERAS_HOME/models``
    (default ``~/.keras/models``)."""
    base = Path(os.environ.get("KERAS_HOME") or Path("~", ".keras")).expanduser()
    return base / "models"


@hookimpl
def register_frameworks() -> list[FrameworkSpec]:
    return [
        FrameworkSpec(
            modules=("tensorflow", "keras"),
            name="keras",
            head_only_runs=True,
            adapter="tlzoo_keras.adapter:KerasAdapter",
            weights_cache="tlzoo_keras:weights_cache",
            input_layout="NHWC",
            # tf.distribute.MirroredStrategy spreads one process over --device 0,1.
            in_process_multi_device=True,
            description="Keras 3 on TensorFlow: MirroredStrategy over several devices, tf2onnx export",
        )
    ]
