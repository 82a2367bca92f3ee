"""How much labelled data pretraining saves: strategies against training-set size on the digits.

    python benchmarks/data_size.py [--per-class 10,30] [--image-size 128] [--epochs 15]

Every run is scored on the same held-out test set (a stratified, seeded 20 % of
the 1,797 digits); the training images are a seeded sample of N per class from
the rest (tlzoo holds 20 % of them out for validation). MobileNetV2 with its real
ImageNet weights for feature-extract and fine-tune; scratch trains the same
architecture from random initialisation. The rule of thumb says pretraining
matters most when data is small: this measures by how much.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import import_offline_weights, write


def split_folders(source: Path, out: Path, per_class: list[int], seed: int = 0) -> tuple[Path, dict[int, Path]]:
    """A common test folder and one training folder per size, as copies of the source images."""
    from sklearn.model_selection import train_test_split

    files = sorted(p for p in source.rglob("*.png"))
    labels = [p.parent.name for p in files]
    pool, test = train_test_split(files, test_size=0.2, stratify=labels, random_state=seed)
    _copy(test, out / "test")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Path]] = {}
    for path in pool:
        by_class.setdefault(path.parent.name, []).append(path)
    train_dirs = {}
    for n in per_class:
        chosen = [p for c in sorted(by_class) for p in rng.permutation(np.array(by_class[c], dtype=object))[:n]]
        train_dirs[n] = _copy(chosen, out / f"train-{n}")
    return out / "test", train_dirs


def _copy(paths: list[Path], dest: Path) -> Path:
    for path in paths:
        target = dest / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", default="10,30")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("TLZOO_OFFLINE", "1")
    os.environ["TLZOO_CACHE"] = tempfile.mkdtemp(prefix="tlzoo-bench-cache-")
    import_offline_weights()
    from tlzoo.images.datasets import ensure_digits
    from tlzoo.training.config import TrainConfig
    from tlzoo.images.split import default_data_root
    from tlzoo.training.run import train

    work = Path(tempfile.mkdtemp(prefix="tlzoo-bench-datasize-"))
    sizes = [int(n) for n in args.per_class.split(",")]
    test_dir, train_dirs = split_folders(ensure_digits(default_data_root()), work / "data", sizes)
    strategies: dict[str, dict[str, Any]] = {
        "feature-extract": {"strategy": "feature-extract"},
        "fine-tune": {"strategy": "fine-tune", "epochs": args.epochs, "augment": "none", "patience": 0},
        "scratch": {"strategy": "scratch", "epochs": args.epochs, "augment": "none", "patience": 0},
    }
    results: dict[str, dict[str, Any]] = {}
    for n, train_dir in train_dirs.items():
        results[str(n)] = {}
        for label, extra in strategies.items():
            run = train(TrainConfig(backbone="mobilenet_v2", data=str(train_dir), test=str(test_dir), image_size=args.image_size,
                                    seed=0, batch_size=32, out_dir=str(work / "runs"), name=f"{label}-{n}", **extra))  # fmt: skip
            m = run.metrics
            results[str(n)][label] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "train_s": m["train_seconds"]}
            print(f"{n:4d} per class  {label:16s} test accuracy {m['accuracy']:.4f}  {m['train_seconds']:.1f} s", flush=True)
    write("data_size", {"settings": {**vars(args), "backbone": "mobilenet_v2", "weights": "IMAGENET1K_V1 (real) except scratch",
                                     "test": "the same stratified 20 % of the digits (360 images) for every run"},
                        "results": results})  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
