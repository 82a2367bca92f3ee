"""int8 accuracy against speed-up for the feature-extract MobileNetV2 classifier: the exclusion sets the
sensitivity search chooses from (the k layers whose quantization costs most, kept in fp32), each with its head
refitted on its own int8 features, as ``tlzoo export onnx --int8`` makes them.

    python benchmarks/int8_curve.py [--keep 0,1,2,3,4,6,8,12,16,24,32,52]

The main job (MobileNetV2 IMAGENET1K_V1, 224 px, the digits, test 20 %). Accuracy on the validation images
(what the search steers by) and on the test split (never seen in training, calibration or the search); batch-1
speed-up against the fp32 file in alternated rounds. Issue 11's goal: within 1 point of fp32 on the test split
and >= 1.5x faster at batch 1.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import import_offline_weights, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", default="0,1,2,3,4,6,8,12,16,24,32,52")
    args = parser.parse_args()
    os.environ.setdefault("TLZOO_OFFLINE", "1")
    import_offline_weights()

    from tlzoo.images.datasets import ensure_digits
    from tlzoo.runs.trained import load_run
    from tlzoo.training.config import TrainConfig
    from tlzoo.images.split import default_data_root
    from tlzoo.training.run import train
    from tlzoo_onnx.export import _model_inputs, _run, export, int8_job, split_set
    from tlzoo_onnx.int8 import LAYER_OPS, sensitivity_order, speedup

    work = Path(tempfile.mkdtemp(prefix="tlzoo-bench-int8-curve-"))
    run = train(TrainConfig(backbone="torch/mobilenet_v2", data=str(ensure_digits(default_data_root())), image_size=224,
                            test_split=0.2, out_dir=str(work / "runs"), name="fe"))  # fmt: skip
    trained = load_run(run.run_dir)
    fp32 = Path(export(trained, work / "fp32.onnx")["path"])
    t0 = time.perf_counter()
    job = int8_job(fp32, trained, False, None, str(work))
    assert job.head is not None, "the main job's softmax head is linear"
    fixed = [job.head.node]
    layers = [n for n in job.quantizer.layers() if n not in fixed]
    order = sensitivity_order(job.quantizer, layers, fixed, job.accuracy, work)
    ranking_s = time.perf_counter() - t0
    images, labels = split_set(trained, "test")
    test_inputs = _model_inputs(trained, images, False)
    test_fp32 = float((_run(fp32, test_inputs).argmax(1) == labels).mean())

    def measure(keep: list[str], path: Path) -> dict[str, Any]:
        job.quantizer.quantize(path, fixed + keep)
        job.head.refit(path, job.refit)
        val = job.accuracy(path)[0]
        test = float((_run(path, test_inputs).argmax(1) == labels).mean())
        return {"val_accuracy": val, "val_drop_points": round(100 * (job.fp32_accuracy - val), 2),
                "test_accuracy": test, "test_drop_points": round(100 * (test_fp32 - test), 2),
                "batch1_speedup": round(speedup(fp32, path, test_inputs[:1], rounds=7, runs=20), 3)}  # fmt: skip

    rows: list[dict[str, Any]] = []
    for k in sorted({min(int(k), len(order)) for k in args.keep.split(",")}):
        rows.append({"kept_fp32": k, **measure(order[:k], work / f"keep{k}.onnx")})
        print(rows[-1], flush=True)
    # Beyond layers: the operators between them. In QDQ a tensor stays fp32 only when its producer and every
    # consumer do, so these show whether any operator-level exclusion can help while the layers stay int8.
    graph = job.quantizer.graph
    by_op = {"every residual Add": [n.name for n in graph.node if n.op_type == "Add"],
             "every operator but the layers (Clip, Add, pooling, reshapes)":
                 [n.name for n in graph.node if n.op_type not in LAYER_OPS]}  # fmt: skip
    operator_rows = []
    for what, names in by_op.items():
        operator_rows.append({"kept_fp32": what, "operators": len(names), **measure(names, work / "ops.onnx")})
        print(operator_rows[-1], flush=True)
    chosen = next((r["kept_fp32"] for r in rows if r["val_drop_points"] <= 1.0), None)
    meets = [r["kept_fp32"] for r in rows if r["test_drop_points"] <= 1.0 and r["batch1_speedup"] >= 1.5]
    result = {
        "what": f"torch/mobilenet_v2 IMAGENET1K_V1 feature-extract classifier, 224 px, digits; {len(labels)} test and "
                f"{len(job.refit.val_labels)} validation images; layers kept fp32 in sensitivity order, head refitted",
        "fp32_val_accuracy": job.fp32_accuracy, "fp32_test_accuracy": test_fp32, "layers": len(layers),
        "sensitivity_order": order, "ranking_seconds": round(ranking_s, 1), "rows": rows, "operator_rows": operator_rows,
        "search_keeps": chosen, "goal": "test drop <= 1 point and >= 1.5x at batch 1", "goal_met_at": meets,
    }  # fmt: skip
    write("int8_curve", result)


if __name__ == "__main__":
    main()
