"""int8 accuracy of classifiers trained end to end on the digits (runtimes.py uses feature extractors).

    python benchmarks/int8_trained.py [--runs mobilenet_v2:fine-tune:128:6,resnet50:scratch:64:8]

Each entry is backbone:strategy:image size:epochs. MobileNetV2 fine-tunes its
real ImageNet weights; ResNet50 has no offline weights, so the only trained
ResNet50 to be had is one trained from scratch on the digits (at 64 px, which
a 2-core CPU trains in minutes; runtimes.py times the same architecture at
224 px). Each run is exported with tlzoo's checked exporter as fp32 and int8,
and both files classify the run's test split (20 %, never seen in training or
calibration); batch-1 latency is timed at the run's image size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import import_offline_weights, percentiles, write
from runtimes import timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="mobilenet_v2:fine-tune:128:6,resnet50:scratch:64:8")
    args = parser.parse_args()
    os.environ.setdefault("TLZOO_OFFLINE", "1")
    import_offline_weights()
    import onnxruntime as ort

    from tlzoo.images.datasets import ensure_digits
    from tlzoo_onnx.predictor import Predictor
    from tlzoo.runs.trained import load_run
    from tlzoo.training.config import TrainConfig
    from tlzoo.images.split import default_data_root
    from tlzoo.training.run import train
    from tlzoo_onnx.export import _model_inputs, export, split_set

    data_root = ensure_digits(default_data_root())
    out_dir = tempfile.mkdtemp(prefix="tlzoo-bench-int8-")
    results: dict[str, Any] = {}
    for entry in args.runs.split(","):
        backbone, strategy, size, epochs = entry.split(":")
        run = train(TrainConfig(backbone=backbone, strategy=strategy, data=str(data_root), image_size=int(size),
                                epochs=int(epochs), augment="none", patience=0, test_split=0.2, seed=0,
                                out_dir=out_dir,
                                name=f"{backbone}-{strategy}"))  # fmt: skip
        trained = load_run(run.run_dir)
        fp32 = export(trained, Path(run.run_dir) / "model.onnx")
        int8 = export(trained, Path(run.run_dir) / "model.int8.onnx", {"int8": True})
        images, labels = split_set(trained, "test")
        accuracy = {name: float((Predictor(r["path"]).predict_proba(images).argmax(1) == labels).mean())
                    for name, r in (("fp32", fp32), ("int8", int8))}  # fmt: skip
        x = _model_inputs(trained, images[:1], False)
        latency = {}
        for name, r in (("fp32", fp32), ("int8", int8)):
            session = ort.InferenceSession(r["path"], providers=["CPUExecutionProvider"])
            latency[name] = percentiles(timed(lambda s=session: s.run(None, {"images": x}), 50))["p50_ms"]
        row = {"backbone": trained.meta["backbone"], "strategy": strategy, "image_size": int(size), "epochs": int(epochs),
               "weights": "IMAGENET1K_V1 (real)" if strategy != "scratch" else "trained from scratch on the digits",
               "test_images": int(len(labels)), "test_accuracy_fp32": accuracy["fp32"], "test_accuracy_int8": accuracy["int8"],
               "int8_accuracy_drop_points": 100 * (accuracy["fp32"] - accuracy["int8"]),
               "batch1_p50_ms_fp32": latency["fp32"], "batch1_p50_ms_int8": latency["int8"],
               "int8_speedup": latency["fp32"] / latency["int8"],
               "int8_layers": int8["int8_layers"], "int8_kept_fp32": len(int8["int8_kept_fp32"]),
               "int8_search_trials": len(int8["int8_search"])}  # fmt: skip
        print(f"{entry}: test accuracy fp32 {accuracy['fp32']:.4f}, int8 {accuracy['int8']:.4f} "
              f"({-row['int8_accuracy_drop_points']:+.2f} points); batch-1 p50 {latency['fp32']:.2f} -> {latency['int8']:.2f} ms "
              f"({row['int8_speedup']:.2f}x)", flush=True)  # fmt: skip
        results[entry] = row
    write("int8_trained", {"settings": vars(args), "results": results})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
