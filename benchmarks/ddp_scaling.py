"""Data-parallel scaling: one process against N processes (torchrun, gloo on CPU; NCCL on every GPU when
there are several), the same model, images and effective batch, alternated so drift hits both alike.

    python benchmarks/ddp_scaling.py [--rounds 2] [--images 600]

Scaling efficiency = (images/s with N processes) / (N x images/s with one). On a machine whose cores one
process already keeps busy (this 2-core CPU: torch uses both), N processes share the same cores and the
efficiency is at most 1/N: the figure says what --nproc costs there, not what it gains on N GPUs. Each
configuration's feed share is the median share of an epoch rank 0 spent waiting for its next batch.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import tempfile
from pathlib import Path
from statistics import median

from _common import tlzoo_cmd, write


def _run(data: Path, out: Path, name: str, extra: list[str]) -> tuple[float, float]:
    """Median images/s of epochs 2-3 and the feed's median share of them (the time rank 0 waited for batches)."""
    cmd = tlzoo_cmd("train", "--backbone", "mobilenet_v2", "--weights", "none", "--image-size", "64",
                    "--freeze", "0", "--epochs", "3", "--patience", "0", "--no-augment", "--data", str(data),
                    "--out-dir", str(out), "--name", name, "--quiet", *extra)  # fmt: skip
    subprocess.run(cmd, check=True, timeout=1800, env={**os.environ, "TLZOO_OFFLINE": "1"})
    rows = list(csv.DictReader((out / name / "history.csv").open()))[1:]  # the first epoch includes warm-up
    return (median(float(r["images_per_second"]) for r in rows),
            median(float(r["feed_seconds"]) / float(r["seconds"]) for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=600, help="digits images used (a stratified head of the set)")
    parser.add_argument("--batch", type=int, default=32, help="effective batch (split over the processes)")
    args = parser.parse_args()

    import torch

    from tlzoo.images.datasets import ensure_digits
    from tlzoo.images.split import default_data_root

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    n = gpus if gpus >= 2 else 2
    digits = ensure_digits(default_data_root())
    work = Path(tempfile.mkdtemp(prefix="tlzoo-bench-ddp-"))
    data = work / "data"
    for class_dir in sorted(digits.iterdir()):
        (data / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[: args.images // 10]:
            (data / class_dir.name / f.name).symlink_to(f)
    single_extra = ["--batch-size", str(args.batch)] + (["--device", "0"] if gpus >= 2 else [])
    multi_extra = ["--batch-size", str(args.batch // n)] + (
        ["--device", ",".join(str(i) for i in range(n))] if gpus >= 2 else ["--nproc", str(n)])
    samples: dict[str, list[float]] = {"1": [], str(n): []}
    feed: dict[str, list[float]] = {"1": [], str(n): []}
    for r in range(args.rounds):
        order = [("1", single_extra), (str(n), multi_extra)]
        for key, extra in order if r % 2 == 0 else order[::-1]:
            rate, share = _run(data, work / "runs", f"p{key}-r{r}", extra)
            samples[key].append(rate)
            feed[key].append(share)
            print(key, rate, f"feed {share:.1%} of the epoch", flush=True)
    one, many = median(samples["1"]), median(samples[str(n)])
    result = {
        "device": f"{gpus} GPUs (NCCL)" if gpus >= 2 else f"CPU, {os.cpu_count()} cores (gloo)",
        "processes": n, "images": args.images, "effective_batch": args.batch, "rounds": args.rounds,
        "what": "MobileNetV2 (random init), 64 px, every unit trained, no augmentation; median epoch images/s "
                "of epochs 2-3, the whole training set per epoch",
        "single_img_s": round(one, 1), "multi_img_s": round(many, 1), "speedup": round(many / one, 2),
        "efficiency": round(many / (n * one), 2), "samples": samples,
        "feed_share": {k: round(median(v), 4) for k, v in feed.items()},
        "feed_share_what": "the share of a training epoch rank 0 spent waiting for its next batch from the feed "
                           "(each rank gathers its own shard from the decoded-pixel store on its own threads)",
    }  # fmt: skip
    print(result)
    write("ddp_scaling", result)


if __name__ == "__main__":
    main()
