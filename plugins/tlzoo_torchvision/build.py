"""Builders for torchvision backbones: the classifier removed, pooled features out.

Imported only when a torchvision backbone is built.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import torch
import torchvision
from torch import nn

from tlzoo.errors import UsageError


def _strip_classifier(name: str, model: nn.Module) -> nn.Module:
    if name.startswith("vgg"):
        # VGG's fully connected layers belong to its ImageNet classifier; like Keras'
        # include_top=False with pooling="avg", the backbone ends with the last convolution.
        parts = OrderedDict(features=model.features, avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1))
        return nn.Sequential(parts)
    if name.startswith(("resnet", "inception")):
        model.fc = nn.Identity()
        if name.startswith("inception"):
            model.aux_logits = False
            model.AuxLogits = None
        return model
    if name == "mobilenet_v3_large":
        model.classifier = nn.Identity()  # 960 pooled features, before the 1280-wide head
        return model
    if name.startswith("vit_"):
        model.heads = nn.Identity()  # the class token after the final LayerNorm
        return model
    if name.startswith("swin"):
        model.head = nn.Identity()  # norm, then average-pooled over the final stage's positions
        return model
    if name.startswith("convnext"):
        model.classifier[2] = nn.Identity()  # keep LayerNorm2d + Flatten
        return model
    model.classifier = nn.Identity()  # mobilenet_v2, efficientnet, densenet
    return model


_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _rename_legacy_densenet_keys(state: dict[str, Any]) -> dict[str, Any]:
    """torchvision's DenseNet files use 'norm.1' where the modules are now 'norm1' (as
    torchvision.models.densenet._load_state_dict does)."""
    renamed = {}
    for key, value in state.items():
        match = _LEGACY_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def build(*, spec: Any, weights: str | None, input_size: tuple[int, int]) -> nn.Module:
    kwargs: dict[str, Any] = {}
    if spec.name == "inception_v3":
        # The ImageNet weights were trained on inputs in -1..1; torchvision turns this on with
        # them. Keep it on for random init too, so the architecture never depends on weights.
        kwargs = {"aux_logits": True, "transform_input": True, "init_weights": False}
    if spec.name.startswith("vit_"):
        if input_size[0] != input_size[1]:
            raise UsageError(f"{spec.id} takes square images, not {input_size[0]}x{input_size[1]}")
        kwargs = {"image_size": input_size[0]}  # its position embeddings are made for one grid of patches
    model = torchvision.models.get_model(spec.name, weights=None, **kwargs)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if spec.name.startswith("densenet"):
            state = _rename_legacy_densenet_keys(state)
        if spec.name.startswith("vit_") and input_size[0] != spec.input_size[0]:
            from torchvision.models.vision_transformer import interpolate_embeddings

            state = interpolate_embeddings(input_size[0], model.patch_size, state)  # as torchvision fine-tunes at 384
        model.load_state_dict(state)
    return _strip_classifier(spec.name, model)
