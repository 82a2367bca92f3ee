"""CLI start-up: `tlzoo --help`, `list-backbones`, `describe`, `plugins` wall time (goal: median <= 0.5 s).

    python benchmarks/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
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
    write("cli_startup", {"results": results})


if __name__ == "__main__":
    main()
