"""The tinynet model (imported only when tlzoo builds the backbone)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def build(*, spec: Any, weights: str | None, input_size: tuple[int, int]) -> nn.Module:
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
    ))  # fmt: skip
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten(1))
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model
