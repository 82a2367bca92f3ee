"""Runtimes: torch eager vs onnxruntime fp32 vs int8 (and CUDA / TensorRT fp32 / fp16 when a GPU is present).

    python benchmarks/runtimes.py [--backbones mobilenet_v2,resnet50] [--runs 50]

For each backbone a feature-extract classifier is trained on the embedded
digits at 224x224 (MobileNetV2 with its real ImageNet weights; backbones
without offline weights use random initialisation and are labelled so), then
exported with tlzoo's checked exporter. Measured: batch-1 latency p50/p90 and
batch-32 throughput, and the int8 model's accuracy change on the digits test
split, for `--int8` as it is now (the linear head refitted on int8 features,
the sensitivity search within 1 point on the validation images) and as it was
(`--no-refit-head --no-int8-search`). Goal (issue 11): the feature-extract
MobileNetV2 digits classifier at 224 px within 1 point of fp32 and >= 1.5x
faster at batch 1.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", default="mobilenet_v2")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("TLZOO_OFFLINE", "1")
    import_offline_weights()
    import onnxruntime as ort
    import torch

    from tlzoo.images.datasets import ensure_digits
    from tlzoo_onnx.predictor import Predictor
    from tlzoo.registry import get_registry
    from tlzoo.runs.trained import load_run
    from tlzoo.training.config import TrainConfig
    from tlzoo.images.split import default_data_root
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
        t0 = time.perf_counter()
        int8 = export(trained, Path(run.run_dir) / "model.int8.onnx", {"int8": True})
        int8_seconds = round(time.perf_counter() - t0, 1)
        plain = export(trained, Path(run.run_dir) / "model.int8-plain.onnx", {"int8": True, "refit_head": False, "int8_search": False})
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
        test_plain = Predictor(plain["path"]).predict_proba(images)
        rows["test_accuracy_fp32"] = float((test_fp32.argmax(1) == labels).mean())
        rows["test_accuracy_int8"] = float((test_int8.argmax(1) == labels).mean())
        rows["int8_accuracy_drop_points"] = 100 * (rows["test_accuracy_fp32"] - rows["test_accuracy_int8"])
        rows["test_accuracy_int8_plain"] = float((test_plain.argmax(1) == labels).mean())
        rows["int8_layers_kept_fp32"] = len(int8["int8_kept_fp32"])
        rows["int8_layers"] = int8["int8_layers"]
        rows["int8_head_refit"] = int8["int8_head_refit"]
        rows["int8_search_trials"] = int8["int8_search"]
        rows["int8_export_seconds"] = int8_seconds
        rows["ort_fp32_vs_torch_latency"] = rows["onnxruntime cpu fp32"]["p50_ms"] / rows["torch eager fp32"]["p50_ms"]
        rows["int8_speedup_vs_ort_fp32"] = rows["onnxruntime cpu fp32"]["p50_ms"] / rows["onnxruntime cpu int8"]["p50_ms"]
        print(f"  ort/torch latency {rows['ort_fp32_vs_torch_latency']:.2f}, int8 speed-up {rows['int8_speedup_vs_ort_fp32']:.2f}x, "
              f"int8 drop {rows['int8_accuracy_drop_points']:.2f} points", flush=True)  # fmt: skip
        results[spec.id] = rows
    write("runtimes", {"settings": {**vars(args), "input": "224x224", "threads": "library defaults"}, "results": results})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
