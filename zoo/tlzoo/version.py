"""tlzoo's version, and the versions of the packages a run or a measurement records."""

from __future__ import annotations

__version__ = "0.1.0"

def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("tlzoo", "torch", "torchvision", "tensorflow", "keras", "numpy", "scikit-learn", "onnx",
                 "onnxruntime-gpu", "onnxruntime", "pillow", "timm", "safetensors"):  # fmt: skip
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
