"""tlzoo's PyTorch framework plugin: the adapter that runs every torch backbone.

Registered through the ``tlzoo`` entry-point group like any plugin. This module
is plain data and standard library only; torch is imported by
:mod:`tlzoo_torch.adapter` when a torch model is built, trained, loaded or
exported.
"""

from __future__ import annotations

import os
from pathlib import Path

from tlzoo import FrameworkSpec, hookimpl

__version__ = "0.1.0"


def weights_cache() -> Path:
    """``torch.hub.get_dir()/checkpoints``, computed without importing torch: ``$TORCH_HOME`` or
    ``$XDG_CACHE_HOME/torch`` (default ``~/.cache/torch``)."""
    if os.environ.get("TORCH_HOME"):
        base = Path(os.environ["TORCH_HOME"])
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        base = Path(xdg).expanduser() / "torch"
    return base / "hub" / "checkpoints"


def gpu_decoder() -> str:
    """The name of the adapter's GPU JPEG decoder (nvJPEG through torchvision), without importing torch."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"nvjpeg (torchvision {version('torchvision')}, torch {version('torch')})"
    except PackageNotFoundError:
        return "nvjpeg (torchvision)"


@hookimpl
def register_frameworks() -> list[FrameworkSpec]:
    return [
        FrameworkSpec(
            modules=("torch", "torchvision"),
            name="torch",
            head_only_runs=True,
            adapter="tlzoo_torch.adapter:TorchAdapter",
            weights_cache="tlzoo_torch:weights_cache",
            gpu_decoder="tlzoo_torch:gpu_decoder",
            input_layout="NCHW",
            description="PyTorch: CUDA mixed precision, DDP under torchrun, torch.onnx export",
        )
    ]
