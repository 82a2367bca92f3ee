"""The training feed with a near-free model: how close tlzoo's epoch comes to a bare loop, interleaved in one run.

    python benchmarks/feed_speed.py [--rounds 5] [--size 64] [--batch 32]

The model is the example plugin's tinynet (three small convolutions: the network costs almost nothing, so what
is measured is the feed around it). The images are the digits at 64 px in the decoded-pixel store.
- tlzoo: the torch plugin's ``Engine.train_epoch`` with its default augmentation (random resized crop and
  flip, per image, on the device), batches gathered from the store, loss and accuracy summed on the device;
- bare loop: the same batches (same order) gathered from the same store, normalized, the bare step, no
  augmentation, no bookkeeping.
Each round runs one epoch of each, alternating which goes first; medians of the steady rounds (the first is a
warm-up) are reported. Goal (the issue "GPU speed"): tlzoo >= 0.8x the bare loop.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
from _common import write

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tlzoo-tinynet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    sys.path.insert(0, str(EXAMPLE))
    os.environ["TLZOO_PLUGINS"] = "tlzoo_tinynet"
    os.environ.setdefault("TLZOO_CACHE", tempfile.mkdtemp(prefix="tlzoo-feed-"))

    import tlzoo.allocator  # noqa: F401  (before torch allocates)
    import torch

    import tlzoo
    from tlzoo import images as datamod
    from tlzoo.images import store
    from tlzoo.adapters import adapter_for
    from tlzoo.images.datasets import ensure_digits
    from tlzoo.registry import get_registry
    from tlzoo.images.split import default_data_root
    from tlzoo_torch.train import normalize

    size, batch = (args.size, args.size), args.batch
    files = datamod.labelled(datamod.scan(ensure_digits(default_data_root())))
    spec = get_registry().resolve("torch/tinynet")
    filled = store.images(Path(os.environ["TLZOO_CACHE"]), files.paths, size, spec.preprocessing)
    images, labels = filled.images, files.labels[filled.kept]

    backbone = tlzoo.get_backbone("torch/tinynet", pretrained=False, input_size=size, seed=0)
    engine = adapter_for("torch").engine(backbone, 10, tap=None, dropout=0.0, seed=0, device="cpu")
    engine.set_compile("off")
    engine.build()
    engine.configure(lr=1e-3, backbone_lr_mult=1.0, optimizer="adamw", momentum=0.9, nesterov=False, weight_decay=0.0)

    torch.manual_seed(0)
    bare = torch.nn.Sequential(
        tlzoo.get_backbone("torch/tinynet", pretrained=False, input_size=size, seed=0).feature_model(None),
        torch.nn.Linear(spec.feature_dim, 10),
    ).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def ours(epoch: int) -> float:
        t0 = time.perf_counter()
        engine.train_epoch(images, labels, batch_size=batch, augment=["flip", "crop"], epoch=epoch, workers=0,
                           progress=None)  # fmt: skip
        return len(labels) / (time.perf_counter() - t0)

    def hand(epoch: int) -> float:
        order = np.random.default_rng(epoch).permutation(len(labels))
        bare.train()
        t0 = time.perf_counter()
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            x = normalize(torch.from_numpy(images[rows]), spec.preprocessing).contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            loss_fn(bare(x), torch.from_numpy(labels[rows].astype(np.int64))).backward()
            opt.step()
        return len(labels) / (time.perf_counter() - t0)

    names = {"tlzoo train_epoch (augmentation on)": ours, "bare loop (no augmentation)": hand}
    rates: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds + 1):
        for name in list(names) if r % 2 == 0 else list(names)[::-1]:
            rate = names[name](r)
            if r:  # round 0 warms up
                rates[name].append(rate)
            print(f"round {r}: {name} {rate:.0f} img/s", flush=True)
    med = {k: round(median(v), 1) for k, v in rates.items()}
    result = {
        "what": f"tinynet (examples/tlzoo-tinynet), digits ({len(labels)} images) at {args.size} px from the "
                f"decoded-pixel store, batch {batch}, AdamW, CPU, one epoch per path per round, {args.rounds} "
                f"alternated rounds after a warm-up",
        "images_per_s": med, "threads": torch.get_num_threads(),
        "ratio": round(med["tlzoo train_epoch (augmentation on)"] / med["bare loop (no augmentation)"], 3),
        "goal": ">= 0.8", "command": "python benchmarks/feed_speed.py",
    }  # fmt: skip
    print(result)
    write("feed_speed", result)


if __name__ == "__main__":
    main()
