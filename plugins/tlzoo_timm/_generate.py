"""Regenerate the timm snapshot from the installed timm (maintainers only; takes minutes).

    python -m tlzoo_timm._generate [--only ARCH ...]

Writes ``index.json`` (what ``tlzoo list-backbones`` reads: one row per architecture with pretrained
weights, one weights row per tag, stored column-wise by ``pack_index``) and ``units.json.gz`` (each
architecture's freeze units, read by ``describe`` and when a backbone is built). Feature widths,
parameter counts and units come from building each architecture on torch's ``meta`` device: no memory,
no weights, no compute.
tests/test_timm.py checks the snapshot against the installed timm.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import timm
import torch

from tlzoo.errors import one_line
from tlzoo_torch.backend import trace_units

from . import INDEX, UNITS, compact_weights, family_of_module, index_rows, pack_index, preprocessing_row, weights_row
from .units import block_unit_modules, input_multiple, tap_layout, weight_layers


def tags_by_architecture() -> dict[str, list[str]]:
    """Every architecture with pretrained weights, its tags in timm's order: the first is the one
    ``timm.create_model(ARCH, pretrained=True)`` loads (``list_models`` sorts them by name instead)."""
    from timm.models import get_arch_pretrained_cfgs

    published: dict[str, set[str]] = defaultdict(set)
    for name in timm.list_models(pretrained=True):
        arch, _, tag = name.partition(".")
        published[arch].add(tag)
    return {arch: [name.partition(".")[2] for name in get_arch_pretrained_cfgs(arch) if name.partition(".")[2] in tags]
            for arch, tags in sorted(published.items())}  # fmt: skip


def build_kwargs(cfg: Any) -> dict[str, Any]:
    """A fixed-size model (a ViT's position embeddings) is built for its image size."""
    return {"img_size": tuple(cfg.input_size[1:])} if cfg.fixed_input_size else {}


def describe(arch: str, tags: list[str]) -> tuple[dict[str, Any], list[list[Any]]]:
    from timm.models import get_pretrained_cfg
    from timm.models._registry import _model_to_module

    cfgs = [get_pretrained_cfg(f"{arch}.{t}") for t in tags]
    default = cfgs[0]
    size = (int(default.input_size[1]), int(default.input_size[2]))
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=0, **build_kwargs(default)).eval()
        with torch.no_grad():
            width = int(model(torch.zeros(1, 3, *size)).shape[-1])
    modules = block_unit_modules(model)
    units = trace_units(model, size, modules, weight_layers())
    multiple = input_multiple(model)
    row = {
        "name": arch,
        "family": family_of_module(_model_to_module.get(arch, "")),
        "input_size": list(size),
        "fixed_input_size": bool(default.fixed_input_size),
        "feature_dim": width,
        "num_params": sum(p.numel() for p in model.parameters()),
        "preprocessing": preprocessing_row(default),
        "weights": [],
        "license": default.license or "",
        "unit_modules": list(modules),
        "tap_layout": tap_layout(model, modules),
        "input_multiple": multiple,
        "min_input_size": max(32, multiple),
        "units": len(units),
        "group_matcher": hasattr(model, "group_matcher"),
    }
    row["weights"] = [compact_weights(weights_row(arch, tag, cfg, default), row) for tag, cfg in zip(tags, cfgs)]
    return row, [[u.name, u.kind, sum(p.numel() for p in u.parameters())] for u in units]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="regenerate these architectures into the existing snapshot")
    args = parser.parse_args(argv)
    tags = tags_by_architecture()
    rows: dict[str, Any] = {}
    units: dict[str, Any] = {}
    if args.only:
        rows = {r["name"]: r for r in index_rows()}
        units = json.loads(gzip.decompress(UNITS.read_bytes()))
    failed = {}
    t0 = time.time()
    for i, arch in enumerate(args.only or sorted(tags)):
        try:
            rows[arch], units[arch] = describe(arch, tags[arch])
        except Exception as exc:  # noqa: BLE001 - one architecture that cannot be built on meta is reported, not fatal
            failed[arch] = f"{type(exc).__name__}: {one_line(exc, 200)}"
        if i % 50 == 0:
            print(f"{i}/{len(tags)} {arch} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    index = pack_index([rows[a] for a in sorted(rows)],
                       {"generator": f"timm {timm.__version__}", "timm_version": timm.__version__, "not_built": failed})
    INDEX.write_text(json.dumps(index, separators=(",", ":")) + "\n")
    UNITS.write_bytes(gzip.compress(json.dumps(units, separators=(",", ":")).encode(), mtime=0))
    print(f"wrote {INDEX} ({len(rows)} architectures; {len(failed)} not built) and {UNITS}")
    for arch, why in failed.items():
        print(f"  not built: {arch}: {why}")


if __name__ == "__main__":
    main()
