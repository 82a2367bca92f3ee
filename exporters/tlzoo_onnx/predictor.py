"""Run an exported tlzoo ONNX model with onnxruntime: labels and preprocessing come from the file.

``Predictor(path).predict(images)`` accepts file paths, folders, PIL images or
uint8 arrays. Providers: ``auto`` picks TensorRT, then CUDA, then CPU among
those that actually start on this machine, without onnxruntime's warnings.
On GPU, inputs are bound once per batch with IOBinding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlzoo.errors import UsageError
from tlzoo.runs.inference import Prediction, predict_stream

from . import metadata as md

__all__ = ["PROVIDERS", "Prediction", "Predictor", "provider_chain"]
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


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
    from tlzoo.cachedir import tlzoo_cache

    path = tlzoo_cache() / "tensorrt"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cuda_driver_present() -> bool:
    """A CUDA provider without a driver fails noisily at session start; look before we ask."""
    from tlzoo.images.decode import cuda_driver_present

    return cuda_driver_present()


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
        read = md.read(meta, self.path)
        outputs = self.session.get_outputs()[0].shape
        if len(outputs) == 2 and isinstance(outputs[1], int) and outputs[1] != len(read.labels):
            raise UsageError(f"{self.path}: the model has {outputs[1]} outputs but its metadata names {len(read.labels)} "
                             f"labels; the file was edited or is not a tlzoo export")  # fmt: skip
        self.classes: list[str] = read.labels
        self.input_size: tuple[int, int] = read.input_size
        self.raw_input: bool = read.raw_input
        self.layout: str = read.layout
        self.preprocessing = read.preprocessing
        self.thresholds: list[float] | None = read.thresholds
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
            from .front import feed

            return feed(images, self.preprocessing, self.input_size)
        from tlzoo.images.normalize import normalize

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

    def predict(self, sources: list[Any] | Any, top_k: int | None = None, batch_size: int = 32, *, strict: bool = False,
                on_skip: Any = None, threshold: float | None = None) -> list[Prediction]:  # fmt: skip
        """Top-k labels (default 5) for image files, folders, PIL images or uint8 arrays (unreadable files
        skipped); a multi-label export's labels over its thresholds (``threshold``: one for every label)."""
        items = sources if isinstance(sources, list) else [sources]
        return list(predict_stream(self, items, top_k=top_k, batch_size=batch_size, strict=strict, on_skip=on_skip,
                                   threshold=threshold))  # fmt: skip
