"""What the plugin author writes by hand; ``tlzoo spec`` fills in feature_dim, num_params and units:

    tlzoo spec tlzoo_tinynet.drafts:DRAFTS --out tlzoo_tinynet/backbones.json [--check]
"""

from __future__ import annotations

import tlzoo
from tlzoo.specs import TORCHVISION_IMAGENET

DRAFTS = [
    tlzoo.BackboneSpec(
        name="tinynet",
        framework="torch",
        builder="tlzoo_tinynet.model:build",
        input_size=(64, 64),
        min_input_size=16,
        feature_dim=0,  # filled in by tlzoo spec
        num_params=0,  # filled in by tlzoo spec
        preprocessing=TORCHVISION_IMAGENET,
        family="tinynet",
        description="Three 3x3 convolutions with batch norm: an example third-party backbone",
        license="MIT",
        source="examples/tlzoo-tinynet",
    )
]
