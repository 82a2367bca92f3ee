"""A feature-extract run whose features are all cached, against a bare `python -c "import torch, sklearn"`,
alternated in rounds, each a new process (what a user waits for at the prompt):

    python benchmarks/cached_run.py [--rounds 5]

The run is the README's main job at 224 px: `tlzoo train` on the embedded digits with MobileNetV2
(IMAGENET1K_V1), softmax head with C chosen on validation data. It is run once to fill a fresh feature
cache (that run's time is reported too), then timed with every feature cached. Goal: <= 2x the bare import.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from _common import import_offline_weights, write


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=1200)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import_offline_weights()
    work = tempfile.mkdtemp(prefix="tlzoo-cached-run-")
    env = {**os.environ, "TLZOO_CACHE": str(Path(work) / "cache")}
    train = [sys.executable, "-m", "tlzoo", "train", "--json", "--quiet", "--out-dir", str(Path(work) / "runs")]
    bare = [sys.executable, "-c", "import torch, sklearn"]

    first_s, out = timed(train, env, work)
    first = json.loads(out)
    assert first["feature_cache"] == "miss", first
    seconds: dict[str, list[float]] = {"bare import torch, sklearn": [], "cached tlzoo train": []}
    runs = []
    for r in range(args.rounds):
        order = list(seconds) if r % 2 == 0 else list(seconds)[::-1]
        for name in order:
            s, out = timed(bare if name.startswith("bare") else train, env, work)
            seconds[name].append(s)
            if not name.startswith("bare"):
                runs.append(json.loads(out))
    assert all(r["feature_cache"] == "hit" and r["accuracy"] == first["accuracy"] for r in runs), runs
    med = {k: round(median(v), 3) for k, v in seconds.items()}
    result = {
        "what": "tlzoo train (the README's main job: MobileNetV2 IMAGENET1K_V1 at 224 px, softmax head, digits) "
                "with every feature cached, each run a new process, against python -c 'import torch, sklearn'",
        "seconds": med, "all_seconds": seconds, "first_run_s": round(first_s, 2), "rounds": args.rounds,
        "ratio_vs_bare_import": round(med["cached tlzoo train"] / med["bare import torch, sklearn"], 2),
        "accuracy": first["accuracy"], "head_seconds": runs[-1]["head_seconds"],
    }  # fmt: skip
    print(result)
    write("cached_run", result)


if __name__ == "__main__":
    main()
