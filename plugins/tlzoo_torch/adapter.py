"""The torch framework adapter (see :class:`tlzoo.adapters.FrameworkAdapter`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlzoo.adapters import FrameworkAdapter

from . import train as torch_train
from .backend import TorchBackbone


class TorchAdapter(FrameworkAdapter):
    model_file = torch_train.MODEL_FILE
    engine_class = torch_train.TorchEngine
    train_mlp = staticmethod(torch_train.train_mlp)

    def seed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    def set_threads(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def wrap(self, spec: Any, model: Any, input_size: tuple[int, int], weights: Any) -> TorchBackbone:
        return TorchBackbone(spec, model, input_size, weights)

    def load_classifier(self, run_dir: Path, meta: Any) -> Any:
        return torch_train.load_classifier(run_dir, meta)

    def classifier_from_head(self, backbone: Any, tap: int | None, head: Any) -> Any:
        return torch_train.TorchClassifier(backbone.feature_model(tap), torch_train.head_from_params(head)).eval()

    def classifier_logits(self, model: Any, batch: np.ndarray) -> np.ndarray:
        import torch

        device = next(model.parameters()).device
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device, non_blocking=True)
            return model(x).float().cpu().numpy()

    def inference_device(self, request: str) -> str:
        return str(torch_train.pick_device(request))

    def classifier_to(self, model: Any, device: str) -> Any:
        return model.to(device)

    def download(self, weights: Any, dest: Path) -> None:
        import torch.hub

        prefix = weights.file_hash if weights.hash_algorithm == "sha256" else None
        torch.hub.download_url_to_file(weights.url, str(dest), hash_prefix=prefix, progress=True)

    def pinned_allocator(self, device: str) -> Any:
        return torch_train.pinned if device.startswith("cuda") else None

    def image_decoder(self, device: str) -> Any:
        """nvJPEG on a CUDA device (see :mod:`tlzoo_torch.nvjpeg`), when torchvision's CUDA decoder works here."""
        if not str(device).startswith("cuda"):
            return None
        from .nvjpeg import working_decoder

        return working_decoder(device)

    def converter(self, format: str) -> Callable[..., None] | None:
        if format == "onnx":
            from .onnx_export import convert

            return convert
        return None
