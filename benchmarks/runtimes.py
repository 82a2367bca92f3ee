"""Runtimes: torch eager vs onnxruntime fp32 vs int8 (and CUDA / TensorRT fp32 / fp16 when a GPU is present).

    python benchmarks/runtimes.py [--backbones mobilenet_v2,resnet50] [--runs 50]

For each backbone a feature-extract classifier is trained on the embedded
digits at 224x224 (MobileNetV2 with its real ImageNet weights; backbones
without offline weights use random initialisation and are labelled so), then
exported with tlzoo's checked exporter. Measured: batch-1 latency p50/p90 and
batch-32 throughput, and the int8 model's accuracy change on the digits test
split. Goals (CPU): onnxruntime fp32 batch-1 latency <= 0.5x torch eager;
int8 >= 1.5x faster than onnxruntime fp32 for resnet50 with <= 1 point
accuracy drop.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import import_offline_weights, percentiles, write


def timed(fn: Any, runs: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def measure(name: str, fn_for_batch: Any, runs: int) -> dict[str, Any]:
    one = percentiles(timed(fn_for_batch(1), runs))
    thirty_two = timed(fn_for_batch(32), max(5, runs // 10), warmup=2)
    row = {**one, "batch32_images_per_s": 32 / float(np.median(thirty_two))}
    print(f"  {name:28s} batch-1 p50 {row['p50_ms']:7.2f} ms  p90 {row['p90_ms']:7.2f} ms  "
          f"batch-32 {row['batch32_images_per_s']:8.1f} img/s", flush=True)  # fmt: skip
    return row


def int8_precision_split(trained: Any, fp32_path: str, images: np.ndarray, labels: np.ndarray, workdir: Path) -> dict[str, float]:
    """Where an int8 accuracy loss comes from: re-quantize with 16 bits on one side at a time.

    W8A8 is what ``tlzoo export --int8`` writes; W16A8 keeps 8-bit activations with 16-bit weights,
    W8A16 the reverse (both run as fp32 kernels in onnxruntime: a diagnosis, not a deployment).
    """
    from tlzoo_onnx.predictor import Predictor
    from tlzoo_onnx.export import _to_int8

    out: dict[str, float] = {}
    for name, weight_bits, activation_bits in (("W8A8", 8, 8), ("W16A8", 16, 8), ("W8A16", 8, 16)):
        path = workdir / f"{name}.onnx"
        _to_int8(Path(fp32_path), path, trained, False, None, str(workdir), weight_bits=weight_bits,
                 activation_bits=activation_bits)  # fmt: skip
        proba = Predictor(str(path)).predict_proba(images)
        out[name] = float((proba.argmax(1) == labels).mean())
        print(f"  test accuracy {name}: {out[name]:.4f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", default="mobilenet_v2,resnet50")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("TLZOO_OFFLINE", "1")
    import_offline_weights()
    import onnxruntime as ort
    import torch

    from tlzoo.datasets import ensure_digits
    from tlzoo_onnx.predictor import Predictor
    from tlzoo.registry import get_registry
    from tlzoo.trained import load_run
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.data_prep import default_data_root
    from tlzoo.training.run import train
    from tlzoo.weights import is_cached
    from tlzoo_onnx.export import _model_inputs, export, split_set

    data_root = ensure_digits(default_data_root())
    out_dir = tempfile.mkdtemp(prefix="tlzoo-bench-runtimes-")
    results: dict[str, Any] = {}
    for name in args.backbones.split(","):
        spec = get_registry().resolve(name)
        pretrained = any(is_cached(spec, w) for w in spec.weights)
        print(f"{spec.id} ({'ImageNet weights' if pretrained else 'random init: no offline weights'})", flush=True)
        run = train(TrainConfig(backbone=spec.id, data=str(data_root), image_size=224, test_split=0.2,
                                weights="auto" if pretrained else "none", out_dir=out_dir, name=spec.name))  # fmt: skip
        trained = load_run(run.run_dir)
        fp32 = export(trained, Path(run.run_dir) / "model.onnx")
        int8 = export(trained, Path(run.run_dir) / "model.int8.onnx", {"int8": True})
        rows: dict[str, Any] = {"weights": "IMAGENET1K_V1" if pretrained else "random",
                                "train_accuracy_test_split": run.metrics["accuracy"]}  # fmt: skip
        images, labels = split_set(trained, "test")
        x_nchw = torch.from_numpy(_model_inputs(trained, images[:32], False))
        model = trained.model.eval()

        def torch_fn(b: int) -> Any:
            x = x_nchw[:b]

            def go() -> None:
                with torch.inference_mode():
                    torch.softmax(model(x), 1)

            return go

        rows["torch eager fp32"] = measure("torch eager fp32", torch_fn, args.runs)
        for label, path in (("onnxruntime cpu fp32", fp32["path"]), ("onnxruntime cpu int8", int8["path"])):
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            xs = x_nchw.numpy()

            def ort_fn(b: int, s: Any = session) -> Any:
                return lambda: s.run(None, {"images": xs[:b]})

            rows[label] = measure(label, ort_fn, args.runs)
        providers = ort.get_available_providers()
        if "CUDAExecutionProvider" in providers and torch.cuda.is_available():
            fp16 = export(trained, Path(run.run_dir) / "model.fp16.onnx", {"fp16": True})
            for label, path, provider in (("onnxruntime cuda fp32", fp32["path"], "cuda"),
                                          ("onnxruntime cuda fp16", fp16["path"], "cuda"),
                                          ("onnxruntime tensorrt fp32", fp32["path"], "tensorrt")):  # fmt: skip
                try:
                    predictor = Predictor(path, provider=provider)
                except Exception as exc:  # a provider that will not start here is recorded, not fatal
                    rows[label] = {"error": str(exc)}
                    continue
                rows[label] = measure(label, lambda b, p=predictor: (lambda: p._run_batch(_model_inputs(trained, images[:b], False))), args.runs)
        test_int8 = Predictor(int8["path"]).predict_proba(images)
        test_fp32 = Predictor(fp32["path"]).predict_proba(images)
        rows["test_accuracy_fp32"] = float((test_fp32.argmax(1) == labels).mean())
        rows["test_accuracy_int8"] = float((test_int8.argmax(1) == labels).mean())
        rows["int8_accuracy_drop_points"] = 100 * (rows["test_accuracy_fp32"] - rows["test_accuracy_int8"])
        rows["int8_precision_split"] = int8_precision_split(trained, fp32["path"], images, labels, Path(run.run_dir))
        rows["ort_fp32_vs_torch_latency"] = rows["onnxruntime cpu fp32"]["p50_ms"] / rows["torch eager fp32"]["p50_ms"]
        rows["int8_speedup_vs_ort_fp32"] = rows["onnxruntime cpu fp32"]["p50_ms"] / rows["onnxruntime cpu int8"]["p50_ms"]
        print(f"  ort/torch latency {rows['ort_fp32_vs_torch_latency']:.2f}, int8 speed-up {rows['int8_speedup_vs_ort_fp32']:.2f}x, "
              f"int8 drop {rows['int8_accuracy_drop_points']:.2f} points", flush=True)  # fmt: skip
        results[spec.id] = rows
    write("runtimes", {"settings": {**vars(args), "input": "224x224", "threads": "library defaults"}, "results": results})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
