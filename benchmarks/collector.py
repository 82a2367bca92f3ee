"""A framework's import with Python's collector as it is against tlzoo's (tlzoo.collector: paused while the
framework is imported, then frozen), interleaved.

Two measures, each a child process per setting (``TLZOO_GC=default`` or not), alternating so that drift of a
shared machine hits both alike; the figures that count are the ratios of medians:

- ``import``: a process that only loads the framework's adapter through tlzoo's plugin loader, as every
  command does, its exit included;
- ``train``: ``tlzoo train`` feature extraction on 24 images at 32 px with random weights and no cache, the
  smallest job that imports, builds and runs the backbone.

    python benchmarks/collector.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from _common import tlzoo_cmd, write

IMPORT = r"""
import sys
from tlzoo.collector import own_process
from tlzoo.adapters import adapter_for
own_process()  # as the CLI does
adapter_for(sys.argv[1])
"""
FRAMEWORKS = ("torch", "keras")
SETTINGS = ("default", "tlzoo")


def _images(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"c{c}" / f"{i}.png")
    return folder


def _timed(cmd: list[str], setting: str) -> float:
    env = {**os.environ, "TLZOO_GC": "default" if setting == "default" else "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, env=env, timeout=600)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tlzoo-collector-"))
    data = _images(work / "data")

    def train(framework: str) -> list[str]:
        return tlzoo_cmd("train", "--data", str(data), "--backbone", f"{framework}/mobilenet_v2", "--weights", "none",
                         "--image-size", "32", "--no-cache", "--out-dir", str(work / "runs"), "--name", framework,
                         "--exist-ok", "--quiet", "--json")  # fmt: skip

    jobs = {f"{what} {fw}": (cmd, fw) for fw in FRAMEWORKS
            for what, cmd in (("import", [sys.executable, "-c", IMPORT, fw]), ("train", train(fw)))}  # fmt: skip
    samples: dict[str, dict[str, list[float]]] = {job: {s: [] for s in SETTINGS} for job in jobs}
    for job, (cmd, _) in jobs.items():
        _timed(cmd, "tlzoo")  # warm-up: the files in the page cache, the bytecode written
    for r in range(args.rounds):
        for job, (cmd, _) in jobs.items():
            for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
                samples[job][setting].append(_timed(cmd, setting))
        print(f"round {r + 1}: " + ", ".join(f"{job} {s['default'][-1]:.2f} -> {s['tlzoo'][-1]:.2f} s"
                                             for job, s in samples.items()), flush=True)  # fmt: skip
    rows = []
    for job, by in samples.items():
        before, after = median(by["default"]), median(by["tlzoo"])
        rows.append({"job": job, "default_s": round(before, 2), "tlzoo_s": round(after, 2),
                     "saved_s": round(before - after, 2), "ratio": round(after / before, 2)})  # fmt: skip
        print(f"{job}: {before:.2f} -> {after:.2f} s wall ({after / before:.2f}x the time)")
    write("collector", {"rounds": args.rounds, "rows": rows, "command": "python benchmarks/collector.py",
                        "what": "wall time of a child process, exit included; median of the rounds; "
                                "TLZOO_GC=default against tlzoo.collector"})  # fmt: skip


if __name__ == "__main__":
    main()
