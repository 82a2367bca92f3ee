"""The softmax head's regularization search on real features, alternated in one process:
- tlzoo now: the warm-started path with BLAS on one thread (tlzoo.heads.one_blas_thread);
- the same path with the default BLAS threads (tlzoo before this change);
- four cold fits plus a refit of the winner (tlzoo before the warm-started path).

    python benchmarks/heads.py [--rounds 3]

Features: MobileNetV2 (IMAGENET1K_V1) at 224 px of the digits, the run's stratified 80/20 train/validation
split (1,437 x 1,280 training features, 10 classes).
"""

from __future__ import annotations

import argparse
import contextlib
import unittest.mock
import time
from statistics import median

import numpy as np
from _common import import_offline_weights, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch  # noqa: F401  (before anything else that loads LLVM)
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    import tlzoo
    from tlzoo import images as datamod
    from tlzoo.images.datasets import ensure_digits
    from tlzoo.images.split import default_data_root
    from tlzoo.heads import choose_c, spread_floor
    from tlzoo.heads import C_GRID

    import_offline_weights()
    full = datamod.load(datamod.scan(ensure_digits(default_data_root())), (224, 224))
    keep, held = datamod.stratified_split(full.labels, 0.2, 1)
    backbone = tlzoo.get_backbone("torch/mobilenet_v2", pretrained=True)
    t0 = time.perf_counter()
    feats = backbone.extract_features(full.images, batch_size=32)
    extract_s = time.perf_counter() - t0
    x, y, xv, yv = feats[keep], full.labels[keep], feats[held], full.labels[held]

    def new() -> tuple[float, float]:  # what tlzoo train does: the warm-started path, C chosen on validation data
        c, _, scores = choose_c("softmax", x, y, xv, yv, 10, C_GRID, seed=0)
        return next(acc for value, acc, _ in scores if value == c), 0.0

    def default_threads() -> tuple[float, float]:
        with unittest.mock.patch("tlzoo.heads.one_blas_thread", contextlib.nullcontext):
            return new()

    def old() -> tuple[float, float]:
        scaler = StandardScaler().fit(x)
        scaler.scale_ = spread_floor(scaler.scale_)
        xs, xvs = scaler.transform(x), scaler.transform(xv)
        scores = []
        for c in C_GRID:
            model = LogisticRegression(C=c, max_iter=3000, random_state=0).fit(xs, y)
            scores.append((float((model.predict(xvs) == yv).mean()), -c))
        best = -max(scores)[1]
        LogisticRegression(C=best, max_iter=3000, random_state=0).fit(xs, y)  # the refit tlzoo used to do
        return max(scores)[0], 0.0

    runners = {"warm-started path, one BLAS thread (now)": new, "warm-started path, default BLAS threads": default_threads,
               "4 cold fits + refit, default BLAS threads": old}
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    accs: dict[str, float] = {}
    for r in range(args.rounds):
        for name in list(runners) if r % 2 == 0 else list(runners)[::-1]:
            t0 = time.perf_counter()
            accs[name] = runners[name]()[0]
            seconds[name].append(time.perf_counter() - t0)
    med = {k: round(median(v), 3) for k, v in seconds.items()}
    result = {
        "what": "softmax head, C in (0.01, 0.1, 1, 10) chosen on the validation images (tlzoo: by log loss; the old "
                "cold fits: by accuracy); 1,437 x 1,280 MobileNetV2 "
                "features of the digits, 360 validation images",
        "seconds": med, "validation_accuracy": accs, "feature_extraction_s": round(extract_s, 1),
        "training_features": list(x.shape),
        "speedup_vs_default_threads": round(med["warm-started path, default BLAS threads"] / med["warm-started path, one BLAS thread (now)"], 2),
        "speedup_vs_cold_fits": round(med["4 cold fits + refit, default BLAS threads"] / med["warm-started path, one BLAS thread (now)"], 2),
    }  # fmt: skip
    print(result)
    write("heads", result)


if __name__ == "__main__":
    main()
