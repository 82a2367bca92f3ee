"""An example tlzoo plugin: one small torch backbone, no pretrained weights.

Specs are plain data; torch is imported only by ``tlzoo_tinynet.model`` when
the backbone is built.
"""

from __future__ import annotations

import tlzoo
from tlzoo.specs import TORCHVISION_IMAGENET

__version__ = "0.1.0"

TINYNET = tlzoo.BackboneSpec(
    name="tinynet",
    framework="torch",
    builder="tlzoo_tinynet.model:build",
    input_size=(64, 64),
    min_input_size=16,
    feature_dim=32,
    num_params=480 + 4704 + 9312,
    preprocessing=TORCHVISION_IMAGENET,
    units=(
        tlzoo.UnitSpec("features.0", "Conv2d", 448 + 32),
        tlzoo.UnitSpec("features.3", "Conv2d", 4640 + 64),
        tlzoo.UnitSpec("features.6", "Conv2d", 9248 + 64),
    ),
    family="tinynet",
    description="Three 3x3 convolutions with batch norm: an example third-party backbone",
    license="MIT",
    source="examples/tlzoo-tinynet",
)


@tlzoo.hookimpl
def register_backbones() -> list[tlzoo.BackboneSpec]:
    return [TINYNET]
