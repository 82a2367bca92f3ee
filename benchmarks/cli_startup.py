"""CLI start-up: `tlzoo --help`, `list-backbones`, `describe`, `plugins` wall time (goal: median <= 0.5 s), and
what the timm plugin's 1,151 backbones add to `list-backbones` (goal: at most 0.05 s), measured against the same
command with the plugin disabled (TLZOO_DISABLE_PLUGINS=timm), the two interleaved run by run.

    python benchmarks/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from _common import tlzoo_cmd, write

COMMANDS = {
    "--help": ["--help"],
    "list-backbones": ["list-backbones"],
    "describe vgg16": ["describe", "vgg16"],
    "plugins": ["plugins"],
}
GOAL_S = 0.5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    results = {}
    for label, argv in COMMANDS.items():
        subprocess.run(tlzoo_cmd(*argv), capture_output=True, check=True)  # warm the file cache
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(tlzoo_cmd(*argv), capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        results[label] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                          "runs": args.runs, "goal_s": GOAL_S, "meets_goal": statistics.median(times) <= GOAL_S}  # fmt: skip
        print(f"tlzoo {label:16s} median {results[label]['median_s']:.3f} s (min {min(times):.3f}, max {max(times):.3f})")
    without_env = {**os.environ, "TLZOO_DISABLE_PLUGINS": "timm"}
    pairs = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run(tlzoo_cmd("list-backbones"), capture_output=True, check=True)
        t1 = time.perf_counter()
        subprocess.run(tlzoo_cmd("list-backbones"), capture_output=True, check=True, env=without_env)
        pairs.append((t1 - t0, time.perf_counter() - t1))
    added = statistics.median(a - b for a, b in pairs)
    results["list-backbones: timm plugin's cost"] = {
        "median_with_s": statistics.median(a for a, _ in pairs), "median_without_s": statistics.median(b for _, b in pairs),
        "median_added_s": added, "runs": args.runs, "goal_s": 0.05, "meets_goal": added <= 0.05}  # fmt: skip
    print(f"tlzoo list-backbones: the timm plugin adds {added:.3f} s (median of {args.runs} interleaved pairs)")
    write("cli_startup", {"results": results})


if __name__ == "__main__":
    main()
