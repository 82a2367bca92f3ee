"""glibc's default allocator against tlzoo's tuned settings (tlzoo.allocator), interleaved.

Each round runs one child process per setting, alternating, so that drift of a shared
machine hits both alike; the figure that counts is the ratio of medians.

    python benchmarks/allocator.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from statistics import median

from _common import machine, write

CHILD = r"""
import json, os, sys, time
mode = os.environ["TLZOO_MALLOC"]
if mode != "default":
    from tlzoo import allocator
    assert allocator.tune(), "mallopt refused"
import torch, torchvision
torch.manual_seed(0)
model = torchvision.models.mobilenet_v2(num_classes=10).to(memory_format=torch.channels_last)
out = {}
x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
model.eval()
with torch.inference_mode():
    model(x)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 6:
        model(x); n += 32
out["inference_img_s"] = n / (time.perf_counter() - t0)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randn(32, 3, 128, 128).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (32,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
step()
t0, n = time.perf_counter(), 0
while time.perf_counter() - t0 < 6:
    step(); n += 32
out["train_img_s"] = n / (time.perf_counter() - t0)
r = __import__("resource").getrusage(__import__("resource").RUSAGE_SELF)
out["system_s"] = r.ru_stime
print(json.dumps(out))
"""


def run(mode: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TLZOO_MALLOC": mode}, check=True)  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    modes = ("default", "threshold", "tuned")
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:  # alternate the order: drift hits every mode alike
            samples[mode].append(run(mode))
            print(mode, samples[mode][-1], flush=True)
    rows = []
    for mode in modes:
        label = {"default": "glibc default", "threshold": "mmap threshold at its 32 MiB cap",
                 "tuned": "tlzoo.allocator: no mmap, no trim"}[mode]  # fmt: skip
        rows.append({"allocator": label,
                     **{k: round(median(s[k] for s in samples[mode]), 2) for k in samples[mode][0]}})  # fmt: skip
    result = {
        "machine": machine(), "rounds": args.rounds, "rows": rows,
        "inference_ratio": round(rows[-1]["inference_img_s"] / rows[0]["inference_img_s"], 2),
        "train_ratio": round(rows[-1]["train_img_s"] / rows[0]["train_img_s"], 2),
        "what": "torchvision MobileNetV2 (random init), channels_last: inference batch 32 at 224 px, "
                "AdamW training steps batch 32 at 128 px; 6 s of each per process",
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    write("allocator", result)


if __name__ == "__main__":
    main()
