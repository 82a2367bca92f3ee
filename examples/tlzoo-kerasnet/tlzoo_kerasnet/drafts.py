"""What the plugin author writes by hand; ``tlzoo spec`` fills in feature_dim, num_params and units:

    tlzoo spec tlzoo_kerasnet.drafts:DRAFTS --out tlzoo_kerasnet/backbones.json [--check]
"""

from __future__ import annotations

import tlzoo
from tlzoo.specs import KERAS_TF

DRAFTS = [
    tlzoo.BackboneSpec(
        name="kerasnet",
        framework="keras",
        builder="tlzoo_kerasnet.model:build",
        input_size=(64, 64),
        min_input_size=16,
        feature_dim=0,  # filled in by tlzoo spec
        num_params=0,  # filled in by tlzoo spec
        preprocessing=KERAS_TF,
        family="kerasnet",
        description="Three 3x3 convolutions with batch norm, in Keras: an example third-party backbone",
        license="MIT",
        source="examples/tlzoo-kerasnet",
    )
]
