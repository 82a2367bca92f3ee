"""The timm framework: the torch adapter, with timm's weight layers, FX helpers and weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlzoo_torch.adapter import TorchAdapter
from tlzoo_torch.backend import TorchBackbone

from .units import weight_layers


class TimmBackbone(TorchBackbone):
    framework = "timm"
    weight_layers = weight_layers()

    def fx_helpers(self) -> tuple[Any, Any]:
        # torchvision's tracer fails on timm's VisionTransformer and others; timm's knows its leaf modules.
        from timm.models._features_fx import create_feature_extractor, get_graph_node_names

        return get_graph_node_names, create_feature_extractor


class TimmAdapter(TorchAdapter):
    def wrap(self, spec: Any, model: Any, input_size: tuple[int, int], weights: Any) -> TimmBackbone:
        return TimmBackbone(spec, model, input_size, weights)

    def download(self, weights: Any, dest: Path) -> None:
        from .hub import download

        download(weights, dest)

    def find_local(self, weights: Any, dest: Path) -> bool:
        from .hub import find_local

        return find_local(weights, dest)

    def import_file(self, source: Path, dest: Path) -> None:
        from .hub import import_file

        import_file(source, dest)
