"""An example tlzoo plugin: one small Keras backbone, no pretrained weights.

The spec is shipped as static data (backbones.json, written by ``tlzoo spec`` from
:mod:`tlzoo_kerasnet.drafts`); Keras is imported only by :mod:`tlzoo_kerasnet.model`
when the backbone is built.
"""

from __future__ import annotations

from pathlib import Path

import tlzoo
from tlzoo.specs import load_specs_json

__version__ = "0.1.0"
SPECS = Path(__file__).with_name("backbones.json")


@tlzoo.hookimpl
def register_backbones() -> list[tlzoo.BackboneSpec]:
    return load_specs_json(SPECS)
