"""CLI start-up: `tlzoo --help`, `list-backbones`, `describe`, `plugins` wall time (goal: median <= 0.5 s), and
what the timm plugin's 1,151 backbones add to `list-backbones` (goal: at most 0.05 s), measured against the same
command with the plugin disabled (TLZOO_DISABLE_PLUGINS=timm), the two interleaved run by run.
``--against DIR`` adds a checkout of another commit (``git worktree add DIR COMMIT``) to the interleaving, for a
before/after in one run; both checkouts are then imported from source (PYTHONPATH), the way DIR has to be.

    python benchmarks/cli_startup.py [--runs 15] [--against DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

from _common import tlzoo_cmd, write

COMMANDS = {
    "--help": ["--help"],
    "list-backbones": ["list-backbones"],
    "describe vgg16": ["describe", "vgg16"],
    "plugins": ["plugins"],
}
GOAL_S = 0.5
# An installed package has its bytecode; with PYTHONDONTWRITEBYTECODE set (as on the build machines) every run would
# compile tlzoo's modules again, a cost no user pays. The warm-up runs write it.
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _timed(*argv: str, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(tlzoo_cmd(*argv), capture_output=True, check=True, env=BASE_ENV if env is None else env)
    return time.perf_counter() - t0


def source_env(checkout: Path) -> dict[str, str]:
    """Import tlzoo from ``checkout``'s source folders instead of the installed package."""
    paths = [str(checkout / d) for d in ("zoo", "plugins", "exporters")]
    return {**BASE_ENV, "PYTHONPATH": os.pathsep.join(paths)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--against", type=Path, help="a checkout of another commit, timed in the same rounds")
    args = parser.parse_args()
    results = {}
    for label, argv in COMMANDS.items():
        _timed(*argv)  # warm the file cache
        times = [_timed(*argv) for _ in range(args.runs)]
        results[label] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                          "runs": args.runs, "goal_s": GOAL_S, "meets_goal": statistics.median(times) <= GOAL_S}  # fmt: skip
        print(f"tlzoo {label:16s} median {results[label]['median_s']:.3f} s (min {min(times):.3f}, max {max(times):.3f})")
    here = source_env(Path(__file__).resolve().parents[1]) if args.against else BASE_ENV
    variants = {"with": here, "without": {**here, "TLZOO_DISABLE_PLUGINS": "timm"}}
    if args.against:
        there = source_env(args.against.resolve())
        variants.update({"against with": there, "against without": {**there, "TLZOO_DISABLE_PLUGINS": "timm"}})
    for env in variants.values():
        _timed("list-backbones", env=env)  # warm the file cache (and write the other checkout's bytecode)
    rounds = []
    for i in range(args.runs):  # the order turns round by round, so no variant always gains from going later
        order = list(variants)[i % len(variants):] + list(variants)[: i % len(variants)]
        rounds.append({name: _timed("list-backbones", env=variants[name]) for name in order})
    added = statistics.median(r["with"] - r["without"] for r in rounds)
    row = {"median_with_s": statistics.median(r["with"] for r in rounds),
           "median_without_s": statistics.median(r["without"] for r in rounds),
           "median_added_s": added, "runs": args.runs, "goal_s": 0.05, "meets_goal": added <= 0.05}  # fmt: skip
    print(f"tlzoo list-backbones: the timm plugin adds {added:.3f} s (median of {args.runs} interleaved rounds)")
    if args.against:
        row["against"] = str(args.against)
        for name in ("against with", "against without"):
            row[f"median_{name.replace(' ', '_')}_s"] = statistics.median(r[name] for r in rounds)
        row["median_against_added_s"] = statistics.median(r["against with"] - r["against without"] for r in rounds)
        print(f"  {args.against}, in the same rounds: the plugin adds {row['median_against_added_s']:.3f} s; "
              f"list-backbones median {row['median_against_with_s']:.3f} s there, {row['median_with_s']:.3f} s here")  # fmt: skip
    results["list-backbones: timm plugin's cost"] = row
    write("cli_startup", {"results": results})


if __name__ == "__main__":
    main()
