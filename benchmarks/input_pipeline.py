"""The input path, as ratios measured in one run (the machine's speed drifts; only ratios are compared):

1. decoding 4000x3000 JPEGs to 224 px: tlzoo's draft-scaled, upright decode against Pillow's full decode and
   resize, interleaved;
2. feature extraction end to end: the main job (MobileNetV2 IMAGENET1K_V1, 224 px, the digits) with an empty
   feature cache, minus the same run with every feature cached, per image, against onnxruntime's batch-32 rate
   on the same run's exported classifier (goal >= 0.8x; the fixed costs count).

    python benchmarks/input_pipeline.py [--images 8] [--rounds 5] [--no-features]

Writes benchmarks/results/input_pipeline.json. Peak memory over 1,000 and 8,000 images and decodes counted across
a compare need the decoded-pixel store (the second half of "Images in") and are not measured here yet.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine, write


def photos(folder: Path, n: int) -> list[Path]:
    """``n`` 4000x3000 baseline JPEGs (quality 90) made from scikit-image's sample photographs."""
    from skimage import data

    sources = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    paths = []
    for i in range(n):
        image = Image.fromarray(sources[i % len(sources)]).resize((4000, 3000), Image.Resampling.BICUBIC)
        path = folder / f"photo{i}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def full_decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    """What tlzoo did before: decode at full size, convert, resize (bilinear)."""
    with Image.open(path) as image:
        image.load()
        rgb = image.convert("RGB")
    return np.asarray(rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-features", action="store_true", help="only the decoding part")
    args = parser.parse_args()
    from tlzoo.decode import load_image
    from tlzoo.specs import TORCHVISION_IMAGENET

    size = (224, 224)
    times: dict[str, list[float]] = {"full decode + resize": [], "tlzoo squash": [], "tlzoo crop 0.875": []}
    runs = {"full decode + resize": lambda p: full_decode(p, size),
            "tlzoo squash": lambda p: load_image(p, size),
            "tlzoo crop 0.875": lambda p: load_image(p, size, TORCHVISION_IMAGENET.with_resize("crop", crop_fraction=0.875))}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        paths = photos(Path(tmp), args.images)
        for name, run in runs.items():  # warm-up: imports, file cache
            run(paths[0])
        for _ in range(args.rounds):
            for name, run in runs.items():  # interleaved rounds
                started = time.perf_counter()
                for path in paths:
                    run(path)
                times[name].append((time.perf_counter() - started) / len(paths) * 1000)
        diff = float(np.abs(load_image(paths[0], size).astype(int) - full_decode(paths[0], size)).mean())
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "machine": machine(), "images": args.images, "rounds": args.rounds, "photo": "4000x3000 baseline JPEG, quality 90",
        "ms_per_image": {k: round(v, 2) for k, v in median.items()},
        "speedup_vs_full_decode": {k: round(median["full decode + resize"] / v, 2) for k, v in median.items()},
        "squash_mean_abs_diff_vs_full_decode": round(diff, 3),
        "command": "python benchmarks/input_pipeline.py",
    }  # fmt: skip
    if not args.no_features:
        result["feature_extraction"] = feature_extraction()
    write("input_pipeline", result)
    for name in times:
        print(f"{name:>22}: {median[name]:7.2f} ms/image ({result['speedup_vs_full_decode'][name]:.2f}x)")
    print(f"squash against the full decode: mean |diff| {diff:.3f} grey levels")
    if "feature_extraction" in result:
        fe = result["feature_extraction"]
        print(f"feature extraction end to end: {fe['end_to_end_images_per_s']} images/s against onnxruntime batch 32 "
              f"{fe['onnxruntime_b32_images_per_s']} ({fe['ratio']}x)")


def feature_extraction() -> dict:
    """Cold minus cached wall time of the main job, per image, against onnxruntime at batch 32 on its export."""
    import json
    import os
    import subprocess
    import sys

    from _common import import_offline_weights, tlzoo_cmd

    work = Path(tempfile.mkdtemp(prefix="tlzoo-input-"))
    env = {**os.environ, "TLZOO_CACHE": str(work / "cache")}
    import_offline_weights(env)
    train = tlzoo_cmd("train", "--backbone", "mobilenet_v2", "--test-split", "0.2", "--json", "--quiet",
                      "--feature-engine", "framework", "--out-dir", str(work / "runs"), "--name", "r", "--exist-ok")  # fmt: skip

    def timed() -> tuple[float, dict]:
        started = time.perf_counter()
        done = subprocess.run(train, capture_output=True, text=True, env=env, check=True)
        return time.perf_counter() - started, json.loads(done.stdout)

    cold_s, cold = timed()
    cached_s, cached = timed()
    assert cold["feature_cache"] == "miss" and cached["feature_cache"] == "hit", (cold, cached)
    subprocess.run(tlzoo_cmd("export", "onnx", str(work / "runs" / "r")), env=env, check=True, capture_output=True)
    from tlzoo.decode import load_image
    from tlzoo_onnx.predictor import Predictor

    predictor = Predictor(work / "runs" / "r" / "model.onnx", provider="cpu")
    rows = [line.split(",")[0] for line in (work / "runs" / "r" / "split.csv").read_text().splitlines()[1:]]
    n = len(rows)
    images = np.stack([load_image(p, predictor.input_size, predictor.preprocessing) for p in rows[:256]])
    predictor.predict_proba(images[:32], batch_size=32)  # warm-up
    started = time.perf_counter()
    predictor.predict_proba(images, batch_size=32)
    ort_rate = len(images) / (time.perf_counter() - started)
    e2e = n / (cold_s - cached_s)
    return {"images": n, "cold_s": round(cold_s, 2), "cached_s": round(cached_s, 2),
            "end_to_end_images_per_s": round(e2e, 1), "onnxruntime_b32_images_per_s": round(ort_rate, 1),
            "ratio": round(e2e / ort_rate, 2), "goal": ">= 0.8"}  # fmt: skip


if __name__ == "__main__":
    main()
