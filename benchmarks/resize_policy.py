"""The resize policy's effect on accuracy: squash (what tlzoo did before), crop (the weights' published transform,
the default now) and pad, on real photographs and on the digits.

    python benchmarks/resize_policy.py [--seeds 0,1,2] [--per-class 40]

- photos: crops of six of scikit-image's sample photographs (one class per photograph), of random size and
  aspect ratio (1:2 to 2:1, so the policies differ), saved at their own resolution as JPEGs;
- digits: the main job's data (8x8 scans, square).
Feature extraction with MobileNetV2's real ImageNet weights (IMAGENET1K_V1, 224 px, logistic head), a 25 %
held-out test split, the same seeds for every policy. Reported: test accuracy and log loss, mean over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean

import numpy as np
from _common import import_offline_weights, tlzoo_cmd, write

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
POLICIES = ("squash", "crop", "pad")


def _photos(root: Path, per_class: int, seed: int = 0) -> Path:
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, -1)
        (root / name).mkdir(parents=True)
        h, w = photo.shape[:2]
        for i in range(per_class):
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height
            ch = int(rng.integers(min(h, w) // 5, min(h, w) // 2))
            cw = min(w - 1, max(8, int(ch * aspect)))
            y, x = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
            Image.fromarray(photo[y : y + ch, x : x + cw, :3]).save(root / name / f"{i:03d}.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tlzoo-resize-"))
    env = {**os.environ, "TLZOO_CACHE": str(work / "cache")}
    import_offline_weights(env)
    datasets = {"photos": str(_photos(work / "photos", args.per_class)), "digits": None}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, data in datasets.items():
        results[name] = {}
        for policy in POLICIES:
            runs = []
            for seed in seeds if name == "photos" else seeds[:1]:
                cmd = tlzoo_cmd("train", "--backbone", "mobilenet_v2", "--resize", policy, "--test-split", "0.25",
                                "--seed", str(seed), "--json", "--quiet", "--out-dir", str(work / "runs"),
                                "--name", f"{name}-{policy}-{seed}", *(["--data", data] if data else []))  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    sys.exit(done.stderr[-3000:])
                runs.append(json.loads(done.stdout))
            results[name][policy] = {"accuracy": round(mean(r["accuracy"] for r in runs), 4),
                                     "log_loss": round(mean(r["log_loss"] for r in runs), 4), "runs": len(runs)}  # fmt: skip
            print(f"{name:>7} {policy:>6}: accuracy {results[name][policy]['accuracy']:.4f}, "
                  f"log loss {results[name][policy]['log_loss']:.4f} ({len(runs)} seed(s))", flush=True)
    write("resize_policy", {
        "what": "feature extraction, MobileNetV2 IMAGENET1K_V1, 224 px, logistic head, 25 % test split; photos: "
                f"{args.per_class} crops (aspect 1:2 to 2:1) of each of {len(PHOTOS)} scikit-image photographs",
        "seeds": seeds, "results": results, "command": "python benchmarks/resize_policy.py",
    })  # fmt: skip


if __name__ == "__main__":
    main()
