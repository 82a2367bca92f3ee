"""Decoding large photos to the input size: tlzoo's draft-scaled, upright decode against Pillow's full decode and
resize, interleaved in one run (the machine's speed drifts; only the ratio is compared).

    python benchmarks/input_pipeline.py [--images 8] [--rounds 5]

Writes benchmarks/results/input_pipeline.json. The other rows the issue "Images in" asks for (feature extraction
end to end against onnxruntime, peak memory over 1,000 and 8,000 images, decodes counted across a compare) need
the decoded-pixel store and are not measured here yet.
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
    write("input_pipeline", result)
    for name in times:
        print(f"{name:>22}: {median[name]:7.2f} ms/image ({result['speedup_vs_full_decode'][name]:.2f}x)")
    print(f"squash against the full decode: mean |diff| {diff:.3f} grey levels")


if __name__ == "__main__":
    main()
