"""A trained torch classifier as ONNX, for tlzoo's ONNX exporter (``adapter.converter("onnx")``).

``torch.onnx.export(dynamo=True)``: the TorchScript exporter fails on VGG's adaptive pooling at
non-224 sizes. The graph ends in probabilities. ``raw_input`` is refused: tlzoo's exporter joins its own
raw-input front (:mod:`tlzoo_onnx.front`) in front of the float-input graph this writes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlzoo.specs import Preprocessing


def convert(model: nn.Module, path: Path, *, input_size: tuple[int, int], preprocessing: Preprocessing, output: str,
            opset: int, batch: int | None, raw_input: bool) -> None:  # fmt: skip
    if raw_input:
        raise ValueError("raw_input graphs are assembled by tlzoo_onnx.front; convert the float-input classifier")
    h, w = input_size

    class Exported(nn.Module):
        def __init__(self, classifier: nn.Module) -> None:
            super().__init__()
            self.classifier = classifier

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.classifier(x)
            if output == "features":  # a frozen backbone for the onnxruntime feature engine
                return logits
            if output == "sigmoid":  # multi-label: each label's own probability
                return torch.sigmoid(logits)
            if output == "ovr":
                p = torch.sigmoid(logits)
                return p / p.sum(dim=1, keepdim=True)
            return torch.softmax(logits, dim=1)

    exported = Exported(model).eval()
    n = batch or 2
    example = torch.zeros(n, 3, h, w)
    dims: dict[int, Any] = {}
    if batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            exported, (example,), dynamo=True, opset_version=opset, input_names=["images"],
            output_names=["probabilities"], dynamic_shapes=({**dims},) if dims else None, verbose=False,
        )  # fmt: skip
    program.save(str(path), external_data=False)
