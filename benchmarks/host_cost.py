"""The host's share of a training step on a GPU, measured without one: before and after, interleaved in one run.

    python benchmarks/host_cost.py [--images 5000] [--size 224] [--batch 128] [--rounds 6] [--before fdf8a32]

Each side runs the CUDA code path of the real training loop (``TorchEngine.train_epoch``, default threads, default
augmentation) under the counting CUDA stand-in (:mod:`tlzoo_torch.standin`): every device tensor is a ``meta``
tensor, so the network (the example plugin's tinynet) and every device-side operation cost next to nothing, and
what is timed is the host's work per step: the decoded-pixel store's gather, the feed's threads, pinning
(emulated: a copy into memory the stand-in calls pinned), the augmentation draws, normalize's constants, the
copies' bookkeeping, the loss and accuracy sums and progress. On a GPU that work overlaps the device's; where it
takes longer than the step's GPU time, it is what sets the pace. The stand-in runs in its ``fast`` mode: a meta
tensor's shape inference (tens of microseconds of Python for an elementwise op) is done once per call signature
and then answered from a cache, and the backward pass is skipped, so a device call costs the host a few
microseconds, as a kernel launch would. The images/s are the wall time's, that residue included; the time spent
in device calls is reported beside them (``stand_in_seconds``), and the rate without it.

"after" is this checkout; "before" is the same script's child run against ``--before``'s code (a git worktree
of that commit, made and removed here). The two children fill their own stores with the same images (at least
5,000 distinct JPEGs, made here), warm them, then take turns: one epoch each per round, alternating who goes
first, the first round a warm-up; medians of the others. The stand-in also counts the calls that would make
the host wait for the GPU, per step.

Goal (the issue "The GPU kept busy"): after >= 16,000 images/s with default threads on the 2-core machine, and
>= 2x before. This replaces ``benchmarks/feed_speed.py``'s question for the GPU path (that script still times the
CPU feed against a bare loop, on the CPU).
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tlzoo-tinynet"
STANDIN = ROOT / "plugins" / "tlzoo_torch" / "standin.py"


def make_images(folder: Path, n: int) -> list[str]:
    """``n`` distinct 96 px JPEGs (a gradient, a shape and noise of their own), reused between runs."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        paths.append(str(path))
        if path.exists():
            continue
        base = (xx * (i % 7 + 1) + yy * (i % 5 + 1)) % 256
        image = np.stack([base, (base + 85 * (i % 3)) % 256, (255 - base)], axis=-1).astype(np.int16)
        image += rng.integers(-20, 21, image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


# -- the child: one side's engine, run epoch by epoch on the parent's word ------------------------------------------
def child(code: Path, images_dir: Path, n: int, size: int, batch: int) -> None:
    import importlib.util

    sys.path[:0] = [str(code / "zoo"), str(code / "plugins"), str(EXAMPLE)]
    os.environ["TLZOO_PLUGINS"] = "tlzoo_tinynet"
    loaded = importlib.util.spec_from_file_location("tlzoo_bench_standin", STANDIN)  # this checkout's, either side
    assert loaded is not None and loaded.loader is not None
    standin = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(standin)

    import numpy as np

    import tlzoo
    from tlzoo.adapters import adapter_for
    from tlzoo.registry import get_registry

    try:
        from tlzoo.images import store
    except ImportError:  # the layout before "One room per stage"
        from tlzoo import store  # type: ignore[no-redef]

    assert Path(tlzoo.__file__).is_relative_to(code), f"tlzoo imported from {tlzoo.__file__}, not {code}"
    files = make_images(images_dir, n)
    spec = get_registry().resolve("torch/tinynet")
    hw = (size, size)
    filled = store.images(Path(os.environ["TLZOO_CACHE"]), files, hw, spec.preprocessing)
    images = filled.images
    labels = np.arange(len(files)) % 10
    np.asarray(images[np.arange(len(files))])  # every page read once: the store is warm (in the page cache)
    with standin.CudaStandIn(fast=True) as cuda:
        backbone = tlzoo.get_backbone("torch/tinynet", pretrained=False, input_size=hw, seed=0)
        engine = adapter_for("torch").engine(backbone, 10, tap=None, dropout=0.0, seed=0, device="cuda")
        engine.set_compile("off")
        engine.build()
        engine.configure(lr=1e-3, backbone_lr_mult=1.0, optimizer="adamw", momentum=0.9, nesterov=False,
                         weight_decay=0.0)  # fmt: skip
        print(json.dumps({"ready": True, "device": engine.device}), flush=True)
        for line in sys.stdin:
            epoch = int(line)
            steps = [0]
            cuda.reset()
            t0 = time.perf_counter()
            engine.train_epoch(images, labels, batch_size=batch, augment=["flip", "crop"], epoch=epoch, workers=0,
                               progress=lambda k: steps.__setitem__(0, steps[0] + 1))  # fmt: skip
            wall = time.perf_counter() - t0
            # the wall time, the stand-in's own residue included (conservative); without it, the host's work alone
            print(json.dumps({"seconds": wall, "host_seconds": wall - cuda.device_seconds, "device_seconds": cuda.device_seconds,
                              "device_calls": cuda.device_calls, "images": len(labels), "steps": steps[0],
                              "blocking": dict(cuda.blocking)}), flush=True)  # fmt: skip


# -- the parent ---------------------------------------------------------------------------------------------------------
def _start(code: Path, images_dir: Path, args: argparse.Namespace, cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TLZOO_CACHE": str(cache), "PYTHONPATH": ""}
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(code), "--images-dir", str(images_dir),
                             "--images", str(args.images), "--size", str(args.size), "--batch", str(args.batch)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))  # fmt: skip
    return proc


def _ask(proc: subprocess.Popen[str], epoch: int | None = None) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    if epoch is not None:
        proc.stdin.write(f"{epoch}\n")
        proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"a child stopped (exit {proc.wait()}); run it alone to see why")
    return dict(json.loads(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--before", default="fdf8a32", help="the commit whose code is 'before' (default: the one "
                        "the issue was filed against)")  # fmt: skip
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.images_dir, args.images, args.size, args.batch)
        return
    sys.path[:0] = [str(ROOT / "zoo")]
    from _common import write

    work = Path(tempfile.mkdtemp(prefix="tlzoo-host-cost-"))
    images_dir = Path(tempfile.gettempdir()) / f"tlzoo-host-cost-images-{args.images}"
    make_images(images_dir, args.images)
    before_code = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before_code), args.before], check=True)
    before_rev = subprocess.run(["git", "-C", str(before_code), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
    after_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    sides = {"before": before_code, "after": ROOT}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, code in sides.items():  # one at a time: each fills its store on both cores
            procs[name] = _start(code, images_dir, args, work / f"cache-{name}")
            ready = _ask(procs[name])
            print(f"{name} ({code}): ready on {ready['device']}", flush=True)
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for r in range(args.rounds):
            turn = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for name in turn:
                got = _ask(procs[name], epoch=r)
                rows[name].append(got)
                print(f"round {r} {name:6}: {got['images'] / got['seconds']:8.0f} images/s, "
                      f"{1000 * got['seconds'] / got['steps']:6.2f} ms a step, blocking {got['blocking']}", flush=True)
    finally:
        for proc in procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_code)], check=False)
    summary: dict[str, Any] = {}
    for name, got in rows.items():
        steady = got[1:]
        steps = steady[0]["steps"]
        summary[name] = {
            "images_per_second": round(median(g["images"] / g["seconds"] for g in steady)),
            "host_ms_per_step": round(median(1000 * g["seconds"] / g["steps"] for g in steady), 2),
            "blocking_calls_per_step": round(sum(steady[0]["blocking"].values()) / steps, 2),
            "blocking_calls_per_epoch": steady[0]["blocking"],
            "device_calls_per_step": round(steady[0]["device_calls"] / steps, 1),
            "stand_in_seconds": round(median(g["device_seconds"] for g in steady), 3),
            "without_stand_in_images_per_second": round(median(g["images"] / g["host_seconds"] for g in steady)),
            "rounds": [round(g["images"] / g["seconds"]) for g in got],
        }
    ratio = summary["after"]["images_per_second"] / summary["before"]["images_per_second"]
    result = {
        "settings": {"images": args.images, "size": args.size, "batch": args.batch, "rounds": args.rounds,
                     "threads": "default (workers 0)", "network": "tinynet on the stand-in (meta tensors)",
                     "before": before_rev, "after": after_rev},
        **summary,
        "after_over_before": round(ratio, 2),
        "goals": {"after >= 16000 images/s": summary["after"]["images_per_second"] >= 16000,
                  "after >= 2x before": ratio >= 2.0},
    }  # fmt: skip
    write("host_cost", result)
    print(json.dumps({k: result[k] for k in ("before", "after", "after_over_before", "goals")}, indent=1))


if __name__ == "__main__":
    main()
