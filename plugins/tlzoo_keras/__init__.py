"""tlzoo's built-in Keras (keras.applications) backbones.

The specs are static data (backbones.json, generated from keras.applications by
``python -m tlzoo_keras._generate``); TensorFlow is imported only by
:mod:`tlzoo_keras.build` when a backbone is built.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tlzoo import BackboneSpec, hookimpl
from tlzoo.specs import load_specs_json

__version__ = "0.1.0"


@lru_cache(maxsize=1)
def _specs() -> tuple[BackboneSpec, ...]:
    return tuple(load_specs_json(Path(__file__).with_name("backbones.json")))


@hookimpl
def register_backbones() -> list[BackboneSpec]:
    return list(_specs())
