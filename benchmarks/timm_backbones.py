"""timm backbones next to MobileNetV2: feature-extraction speed and accuracy with a logistic head.

    python benchmarks/timm_backbones.py [--per-class 40] [--backbones ID,ID,...]

On the digits (the main job's data) and on crops of scikit-image's photographs (benchmarks/resize_policy.py's
photos), 25 % held-out test split, seed 0, 224 px. No timm weights can be fetched on this machine, so every
timm backbone runs with RANDOM weights (--weights none): its accuracy says what random features of that
architecture give, not what the pretrained model would; no pretrained timm accuracy was measured. MobileNetV2
runs twice: with its real ImageNet weights (offline package) and random, for scale. Speed is every image of the
dataset over the run's feature_seconds: decoding (JPEG/PNG to 224 px, each backbone's own interpolation and crop)
included, one run each, on this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import import_offline_weights, tlzoo_cmd, write
from resize_policy import _photos

BACKBONES = ("torch/mobilenet_v2:IMAGENET1K_V1", "torch/mobilenet_v2:none", "timm/mobilenetv3_large_100:none",
             "timm/convnextv2_atto:none", "timm/tf_efficientnetv2_b0:none", "timm/vit_small_patch14_dinov2:none",
             "timm/eva02_tiny_patch14_224:none")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tlzoo-timm-"))
    env = {**os.environ, "TLZOO_CACHE": str(work / "cache")}
    import_offline_weights(env)
    datasets = {"digits": None, "photos": str(_photos(work / "photos", args.per_class))}
    counts = {"digits": 1797, "photos": 6 * args.per_class}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for item in args.backbones.split(","):
        backbone, _, weights = item.partition(":")
        for name, data in datasets.items():
            cmd = tlzoo_cmd("train", "--backbone", backbone, "--weights", weights, "--image-size", "224",
                            "--test-split", "0.25", "--seed", "0", "--json", "--quiet", "--no-cache",
                            "--out-dir", str(work / "runs"), "--name", f"{name}-{backbone.replace('/', '-')}-{weights}",
                            *(["--data", data] if data else []))  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                sys.exit(f"{item} on {name}: {done.stderr[-3000:]}")
            summary = json.loads(done.stdout)
            row = {"accuracy": round(summary["accuracy"], 4), "log_loss": round(summary["log_loss"], 4),
                   "images_per_s": round(counts[name] / summary["feature_seconds"], 1)}  # fmt: skip
            results.setdefault(item, {})[name] = row
            print(f"{item:>40} {name:>6}: accuracy {row['accuracy']:.4f}, log loss {row['log_loss']:.4f}, "
                  f"{row['images_per_s']:.1f} img/s", flush=True)
    write("timm_backbones", {
        "what": "feature extraction at 224 px, logistic head, 25 % test split, seed 0; timm backbones with RANDOM "
                "weights (none can be fetched here), MobileNetV2 with its real ImageNet weights and random; photos: "
                f"{args.per_class} crops of each of 6 scikit-image photographs",
        "results": results, "command": "python benchmarks/timm_backbones.py",
    })  # fmt: skip


if __name__ == "__main__":
    main()
