"""Run an exported tlzoo ONNX model with onnxruntime: labels and preprocessing come from the file.

``Predictor(path).predict(images)`` accepts file paths, folders, PIL images or
uint8 arrays. Providers: ``auto`` picks TensorRT, then CUDA, then CPU among
those that actually start on this machine, without onnxruntime's warnings.
On GPU, inputs are bound once per batch with IOBinding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .specs import Preprocessing

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "top": [{"label": label, "probability": p} for label, p in self.top]}


def provider_chain(choice: str) -> list[Any]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if choice == "auto":
        wanted = ["tensorrt", "cuda", "cpu"]
    elif choice in PROVIDERS:
        wanted = [choice]
    else:
        raise UsageError(f"--provider {choice!r}: choose auto, {', '.join(PROVIDERS)}")
    chain: list[Any] = []
    for name in wanted:
        provider = PROVIDERS[name]
        if provider not in available:
            if choice != "auto":
                raise UsageError(f"onnxruntime here has no {provider} (available: {', '.join(sorted(available))})")
            continue
        if name == "cuda":
            # EXHAUSTIVE cuDNN search stalls the first run for seconds; HEURISTIC is close in speed.
            chain.append((provider, {"cudnn_conv_algo_search": "HEURISTIC"}))
        elif name == "tensorrt":
            chain.append((provider, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(_trt_cache())}))
        else:
            chain.append(provider)
    return chain


def _trt_cache() -> Path:
    import os

    base = os.environ.get("TLZOO_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "tlzoo")
    path = Path(base).expanduser() / "tensorrt"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cuda_driver_present() -> bool:
    """A CUDA provider without a driver fails noisily at session start; look before we ask."""
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None or Path("/proc/driver/nvidia/version").exists()


class Predictor:
    """An exported tlzoo classifier, ready to run."""

    def __init__(self, path: str | Path, provider: str = "auto") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"model file {self.path} does not exist")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        chain = provider_chain(provider)
        if not _cuda_driver_present():
            if provider in ("cuda", "tensorrt"):
                raise UsageError(f"--provider {provider} needs an NVIDIA GPU and driver; none was found on this machine")
            chain = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=chain)
        except Exception as exc:
            raise UsageError(f"{self.path} is not a model onnxruntime can load: {type(exc).__name__}: {exc}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "tlzoo.labels" not in meta:
            raise UsageError(f"{self.path} is an ONNX model but not one tlzoo exported (no tlzoo.labels metadata)")
        self.classes: list[str] = json.loads(meta["tlzoo.labels"])
        self.input_size: tuple[int, int] = tuple(json.loads(meta["tlzoo.input_size"]))  # type: ignore[assignment]
        self.raw_input: bool = json.loads(meta["tlzoo.raw_input"])
        self.layout: str = meta["tlzoo.layout"]
        self.preprocessing = Preprocessing.from_dict(json.loads(meta["tlzoo.preprocessing"]))
        self.metadata = dict(meta)
        self.providers = self.session.get_providers()
        if provider in ("cuda", "tensorrt") and self.providers[0] != PROVIDERS[provider]:
            raise UsageError(f"onnxruntime could not start {PROVIDERS[provider]} here (it fell back to {self.providers[0]})")
        self._input = self.session.get_inputs()[0]
        fixed = self._input.shape[0]
        self.fixed_batch: int | None = fixed if isinstance(fixed, int) else None

    @property
    def provider(self) -> str:
        return str(self.providers[0])

    def _inputs(self, images: np.ndarray) -> np.ndarray:
        if self.raw_input:
            return np.ascontiguousarray(images)
        from .preprocess import normalize

        x = normalize(images, self.preprocessing)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else x

    def _run_batch(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self.fixed_batch is not None and n != self.fixed_batch:
            if n > self.fixed_batch:
                return np.concatenate([self._run_batch(x[i : i + self.fixed_batch]) for i in range(0, n, self.fixed_batch)])
            x = np.concatenate([x, np.repeat(x[-1:], self.fixed_batch - n, axis=0)])
        if self.provider != "CPUExecutionProvider":
            binding = self.session.io_binding()
            binding.bind_cpu_input(self._input.name, x)
            binding.bind_output(self.session.get_outputs()[0].name)
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            out = self.session.run(None, {self._input.name: x})[0]
        return np.asarray(out)[:n]

    def predict_proba(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities for RGB uint8 images (N, H, W, 3) at the model's input size."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise UsageError(f"expected RGB uint8 images shaped (N, H, W, 3), got {images.dtype} {images.shape}")
        out = [self._run_batch(self._inputs(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float64)

    def predict(self, sources: list[Any] | Any, top_k: int = 5, batch_size: int = 32) -> list[Prediction]:
        """Top-k labels for image files, folders, PIL images or uint8 arrays."""
        paths, images = self._collect(sources if isinstance(sources, list) else [sources])
        proba = self.predict_proba(images, batch_size=batch_size)
        k = max(1, min(top_k, len(self.classes)))
        order = np.argsort(-proba, axis=1)[:, :k]
        return [
            Prediction(path, [(self.classes[j], float(proba[i, j])) for j in order[i]]) for i, path in enumerate(paths)
        ]

    def _collect(self, sources: list[Any]) -> tuple[list[str], np.ndarray]:
        from .preprocess import is_image_file, load_image, to_rgb

        paths: list[str] = []
        images: list[np.ndarray] = []
        for source in sources:
            if isinstance(source, (str, Path)):
                p = Path(source)
                if p.is_dir():
                    files = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
                    if not files:
                        raise UsageError(f"{p} contains no images")
                elif p.is_file():
                    files = [p]
                else:
                    raise UsageError(f"{p} does not exist")
                for f in files:
                    try:
                        images.append(load_image(f, self.input_size))
                    except Exception as exc:
                        raise UsageError(f"{f} is not an image tlzoo can read: {type(exc).__name__}: {exc}") from None
                    paths.append(str(f))
            elif isinstance(source, np.ndarray):
                from PIL import Image

                pil = Image.fromarray(source)
                images.append(np.asarray(to_rgb(pil).resize(self.input_size[::-1], Image.Resampling.BILINEAR)))
                paths.append(f"<array {len(paths)}>")
            else:  # a PIL image
                from PIL import Image

                images.append(np.asarray(to_rgb(source).resize(self.input_size[::-1], Image.Resampling.BILINEAR)))
                paths.append(f"<image {len(paths)}>")
        if not images:
            raise UsageError("no images given")
        return paths, np.stack(images)
