"""`tlzoo compare` on the embedded digits: backbones x strategies, one leaderboard.

    python benchmarks/compare_digits.py [--image-size 96] [--random-image-size 32] [--epochs 4]

MobileNetV2 (torch) uses its real ImageNet weights (offline); keras/vgg16 has
no offline weights and is random-initialised: its rows are labelled so. The
random-init backbones run at a smaller size (the digits are 8x8 pixels, and no
pretrained filter expects a scale), which keeps VGG16 affordable on a CPU.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", default="mobilenet_v2")
    parser.add_argument("--random-backbones", default="keras/vgg16", help="Backbones without offline weights.")
    parser.add_argument("--strategies", default="feature-extract,fine-tune:freeze=0,8,all,two-stage,scratch")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--random-image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--augment", default="none", help="Digits: mirrors and crops change or cut the symbol.")
    args = parser.parse_args()
    env = {**os.environ, "TLZOO_OFFLINE": "1", "TLZOO_CACHE": tempfile.mkdtemp(prefix="tlzoo-bench-cache-")}
    import_offline_weights(env)
    board = []
    for backbones, weights, size, label in (
        (args.backbones, "auto", args.image_size, "IMAGENET1K_V1 (real)"),
        (args.random_backbones, "none", args.random_image_size, "random init (no offline weights)"),
    ):
        if not backbones:
            continue
        out = Path(tempfile.mkdtemp(prefix="tlzoo-bench-compare-"))
        cmd = tlzoo_cmd("compare", "--backbones", backbones, "--strategies", args.strategies, "--image-size",
                        str(size), "--epochs", str(args.epochs), "--augment", args.augment, "--weights", weights,
                        "--out", str(out), "--json")  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(done.stderr)
        board += [{**row, "weights": label, "image_size": size} for row in json.loads(done.stdout)]
    for row in board:
        row.pop("run_dir", None)
        row.pop("onnx_path", None)
        print(row["backbone"], row["strategy"], row.get("status"), row.get("accuracy"), row.get("train_s"))
    write("compare_digits", {"settings": {**vars(args), "data": "UCI digits, 1797 images, test 20 %", },
                             "leaderboard": board})  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
