"""The static specs that list/describe read without importing a framework must match the real models."""

from __future__ import annotations

import pytest

import tlzoo
from tlzoo.backbone import get_backbone


def _small_size(spec: tlzoo.BackboneSpec) -> int:
    if spec.input_multiple > 1:  # patch models: position embeddings (parameters) are declared at the spec's size
        return spec.input_size[0]
    return max(spec.min_input_size, 32)


@pytest.mark.tlzoo_slow
@pytest.mark.parametrize("backbone_id", [s.id for s in tlzoo.list_backbones() if s.framework in ("torch", "keras")])  # timm: test_timm.py
def test_static_spec_matches_built_model(backbone_id):
    spec = next(s for s in tlzoo.list_backbones() if s.id == backbone_id)
    size = _small_size(spec)
    backbone = get_backbone(spec, pretrained=False, input_size=size)
    assert backbone.num_params == spec.num_params
    assert [(u.name, u.kind, u.params) for u in backbone.units] == [(u.name, u.kind, u.params) for u in spec.units]
    assert sum(u.params for u in backbone.units) == spec.num_params, "every parameter belongs to a unit"
    images = (backbone_rng().integers(0, 256, size=(2, size, size, 3))).astype("uint8")
    features = backbone.extract_features(images)
    assert features.shape == (2, spec.feature_dim)
    assert features.dtype.name == "float32"


def backbone_rng():
    import numpy as np

    return np.random.default_rng(0)
