"""Training speed: tlzoo's own fine-tuning loop against hand-written torch loops, interleaved in one process.

    python benchmarks/training_speed.py [--rounds 3] [--steps 12]

The same model (torchvision MobileNetV2, random init, every layer trained), the same data (digits at
128 px, batch 32, AdamW) and the process's allocator (tlzoo.allocator's setting, applied at import):
- tlzoo: the torch framework plugin's Engine.train_epoch, as `tlzoo train --strategy scratch` runs it
  (its feed: batches gathered ahead on a thread, augmentation off, loss and accuracy summed on the device);
- tuned loop: channels_last weights and inputs, pre-normalized tensors, the bare step;
- naive loop: NCHW weights and inputs, the bare step;
- tlzoo --compile on: the same train_epoch with the step compiled by torch.compile (inductor); its one-off
  compile time is measured by a warm-up epoch before the rounds, and from the two the number of training
  images after which compiling pays on this machine.
Each round runs each path for --steps steps after 2 warm-up steps, in alternating order; medians are
reported. Goal (issue 11): tlzoo >= 0.95x the tuned loop.
"""

from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Any

import numpy as np
from _common import write

COMPILED = "tlzoo --compile on (torch.compile, inductor)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    import tlzoo.allocator  # noqa: F401  (before torch allocates)
    import torch
    import torchvision

    import tlzoo
    from tlzoo import images as datamod
    from tlzoo.adapters import adapter_for
    from tlzoo.images.datasets import ensure_digits
    from tlzoo.images.normalize import normalize
    from tlzoo.images.split import default_data_root

    size, batch = (args.size, args.size), args.batch
    n = batch * (args.steps + 2)
    full = datamod.load(datamod.scan(ensure_digits(default_data_root())), size)
    images, labels = full.images[:n], full.labels[:n]
    from tlzoo.registry import get_registry

    spec = get_registry().resolve("torch/mobilenet_v2")
    x_all = torch.from_numpy(np.ascontiguousarray(normalize(images, spec.preprocessing).transpose(0, 3, 1, 2)))
    y_all = torch.from_numpy(labels)

    backbone = tlzoo.get_backbone("torch/mobilenet_v2", pretrained=False, input_size=size, seed=0)
    engine = adapter_for("torch").engine(backbone, 10, tap=None, dropout=0.0, seed=0, device="cpu")
    engine.build()
    engine.configure(lr=1e-3, backbone_lr_mult=1.0, optimizer="adamw", momentum=0.9, nesterov=False, weight_decay=0.0)

    compiled = adapter_for("torch").engine(backbone, 10, tap=None, dropout=0.0, seed=0, device="cpu")
    compiled.set_compile("on")
    compiled.build()
    compiled.configure(lr=1e-3, backbone_lr_mult=1.0, optimizer="adamw", momentum=0.9, nesterov=False, weight_decay=0.0)
    t0 = time.perf_counter()
    compiled.train_epoch(images, labels, batch_size=batch, augment=[], epoch=0, workers=0, progress=None)
    first_epoch_s = time.perf_counter() - t0  # compiling included

    def hand_model(channels_last: bool) -> tuple[Any, Any]:
        torch.manual_seed(0)
        model = torchvision.models.mobilenet_v2(num_classes=10)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.train(), torch.optim.AdamW(model.parameters(), lr=1e-3)

    hands = {"tuned loop (channels_last)": (*hand_model(True), True), "naive loop (NCHW)": (*hand_model(False), False)}
    loss_fn = torch.nn.CrossEntropyLoss()

    def hand(name: str) -> float:
        model, opt, channels_last = hands[name]
        t0 = 0.0
        for step in range(args.steps + 2):
            if step == 2:
                t0 = time.perf_counter()
            x = x_all[step * batch : (step + 1) * batch]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y_all[step * batch : (step + 1) * batch])
            loss.backward()
            opt.step()
        return args.steps * batch / (time.perf_counter() - t0)

    def ours(which: Any = engine) -> float:
        marks: list[float] = []

        def progress(k: int) -> None:
            marks.append(time.perf_counter())

        which.train_epoch(images, labels, batch_size=batch, augment=[], epoch=0, workers=0, progress=progress)
        return args.steps * batch / (marks[-1] - marks[1])  # from the end of step 2 to the end of the last step

    runners = {"tlzoo (the torch plugin's train_epoch)": ours, **{k: (lambda k=k: hand(k)) for k in hands},
               COMPILED: lambda: ours(compiled)}
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        for name in list(runners) if r % 2 == 0 else list(runners)[::-1]:
            rates[name].append(runners[name]())
            print(f"round {r}: {name} {rates[name][-1]:.1f} img/s", flush=True)
    med = {k: round(median(v), 1) for k, v in rates.items()}
    result = {
        "what": f"MobileNetV2 (random init, all layers trained), digits at {args.size} px, batch {batch}, AdamW, CPU, "
                f"{args.steps} timed steps per path per round, {args.rounds} alternated rounds",
        "images_per_s": med, "threads": torch.get_num_threads(),
        "ratio_vs_tuned": round(med["tlzoo (the torch plugin's train_epoch)"] / med["tuned loop (channels_last)"], 3),
        "ratio_vs_naive": round(med["tlzoo (the torch plugin's train_epoch)"] / med["naive loop (NCHW)"], 3),
        "compiled_vs_eager": round(med[COMPILED] / med["tlzoo (the torch plugin's train_epoch)"], 3),
        "compile_seconds": round(first_epoch_s - n / med[COMPILED], 1),  # the first epoch less its steps' time
    }  # fmt: skip
    eager_s, compiled_s = 1 / med["tlzoo (the torch plugin's train_epoch)"], 1 / med[COMPILED]
    result["compile_pays_after_images"] = round(result["compile_seconds"] / (eager_s - compiled_s)) if compiled_s < eager_s else None
    print(result)
    write("training_speed", result)


if __name__ == "__main__":
    main()
