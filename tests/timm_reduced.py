"""Three timm backbones shrunk for tests (random weights, few blocks): a ConvNeXt V2, a DINOv2 ViT-S/14 and
a CLIP image tower, registered as ``timm/tiny_*`` with their real architecture's tags, preprocessing and
freeze rule (``unit_modules``), built by the timm plugin's own ``create``."""

from __future__ import annotations

import dataclasses
from typing import Any

from tlzoo import hookimpl
from tlzoo.specs import BackboneSpec

REDUCED: dict[str, tuple[str, dict[str, Any], int]] = {  # tlzoo name: (timm architecture, its shrinking, size)
    "tiny_convnextv2": ("convnextv2_atto", {"depths": (1, 1, 1, 1)}, 32),
    "tiny_dinov2": ("vit_small_patch14_dinov2", {"depth": 2, "embed_dim": 64, "num_heads": 2}, 56),
    "tiny_clip": ("vit_base_patch16_clip_224", {"depth": 2, "embed_dim": 64, "num_heads": 2}, 32),
}


def build(*, spec: Any, weights: str | None, input_size: tuple[int, int]) -> Any:
    from tlzoo_timm.build import create, tag_of

    arch, shrink, _ = REDUCED[spec.name]
    return create(arch, tag_of(spec, weights), weights, input_size, **shrink)


def reduced_specs() -> list[BackboneSpec]:
    from tlzoo_timm import index_rows, spec_of

    rows = {row["name"]: row for row in index_rows()}
    specs = []
    for name, (arch, _, size) in REDUCED.items():
        real = spec_of(rows[arch])
        # No units listed: the shrunk model's are read off it, by the real architecture's rule (unit_modules).
        specs.append(dataclasses.replace(real, name=name, builder="tests.timm_reduced:build", input_size=(size, size),
                                         units=(), feature_dim=FEATURES[name][0], num_params=FEATURES[name][1],
                                         weights=tuple(dataclasses.replace(w, input_size=()) for w in real.weights)))
    return specs


FEATURES = {"tiny_convnextv2": (320, 1_399_600), "tiny_dinov2": (64, 139_200), "tiny_clip": (64, 149_760)}  # (width, parameters)


@hookimpl
def register_backbones() -> list[BackboneSpec]:
    return reduced_specs()
