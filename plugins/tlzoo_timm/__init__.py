"""tlzoo's timm plugin: every timm architecture that has pretrained weights, as ``timm/NAME``.

Listing and describing read a snapshot generated from timm ahead of time (``index.json``, and
``units.json.gz`` for the freeze units, loaded only when they are needed; ``python -m
tlzoo_timm._generate`` writes both): neither torch nor timm is imported until a model is built.
A timm tag (``vit_small_patch14_dinov2.lvd142m``) is a weights tag of its architecture
(``--backbone timm/vit_small_patch14_dinov2 --weights lvd142m``); each tag brings the input size,
normalization, interpolation, crop fraction and crop mode timm publishes for it.
"""

from __future__ import annotations

import gc
import gzip
import json
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, TypeVar, overload

from tlzoo import BackboneSpec, FrameworkSpec, hookimpl
from tlzoo.cachedir import tlzoo_cache
from tlzoo.specs import Preprocessing, WeightsSpec, units_from_rows

__version__ = "0.1.0"
HERE = Path(__file__).parent
INDEX = HERE / "index.json"
UNITS = HERE / "units.json.gz"
WEIGHTS_FILE = "{arch}.{tag}.safetensors"
# timm's crop modes as tlzoo's resize policies: ``center`` is crop (the short side to size / crop fraction,
# the centre taken), ``squash`` stretches both sides to size / crop fraction and takes the centre (tlzoo's
# squash with that crop fraction), ``border`` fits the long side and pads with the mean colour (tlzoo's pad;
# timm's border tags all have a crop fraction of 1).
CROP_MODES = {"center": "crop", "squash": "squash", "border": "pad"}


def weights_cache() -> Path:
    """``$TLZOO_CACHE/weights/timm`` (default ``~/.cache/tlzoo/weights/timm``): one safetensors file per tag."""
    return tlzoo_cache() / "weights" / "timm"


def family_of_module(module: str) -> str:
    """timm's model module (``timm.models.vision_transformer``) names the family: ``vision_transformer``."""
    return module.rsplit(".", 1)[-1]


def preprocessing_row(cfg: Any) -> dict[str, Any]:
    if cfg.crop_mode not in CROP_MODES:
        raise ValueError(f"unknown timm crop mode {cfg.crop_mode!r}")
    # Three VOLO tags have 1.15: timm shrinks the image below the input size and pads it with black. tlzoo
    # decodes them at crop fraction 1 instead (the whole short side, nothing black).
    crop = min(1.0, float(cfg.crop_pct or 0.875))
    return {"mode": "timm", "mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std],
            "interpolation": cfg.interpolation, "resize": CROP_MODES[cfg.crop_mode],
            "crop_fraction": 1.0 if cfg.crop_mode == "border" else crop}  # fmt: skip


def weights_row(arch: str, tag: str, cfg: Any, default: Any) -> dict[str, Any]:
    """One tag as a :class:`tlzoo.specs.WeightsSpec` row: only what differs from the default tag is kept."""
    prep, base = preprocessing_row(cfg), preprocessing_row(default)
    row: dict[str, Any] = {"tag": tag, "file_name": WEIGHTS_FILE.format(arch=arch, tag=tag), "file_hash": "",
                           "url": f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else (cfg.url or ""),
                           "source": "timm", "dataset": tag, "license": cfg.license or ""}  # fmt: skip
    for key in ("resize", "crop_fraction", "interpolation", "mean", "std"):
        if prep[key] != base[key] or key in ("resize", "crop_fraction", "interpolation"):
            row[key] = prep[key]
    if tuple(cfg.input_size) != tuple(default.input_size):
        row["input_size"] = [int(cfg.input_size[1]), int(cfg.input_size[2])]
    return row


def compact_weights(row: dict[str, Any], arch_row: dict[str, Any]) -> dict[str, Any]:
    """A weights row as the index stores it: what :func:`expand_weights` cannot derive from the architecture."""
    arch, tag = arch_row["name"], row["tag"]
    derived = expand_weights(arch_row, {"tag": tag})
    return {k: v for k, v in row.items() if k == "tag" or v != getattr(derived, k)}


def expand_weights(arch_row: dict[str, Any], row: dict[str, Any]) -> WeightsSpec:
    arch, tag, prep = arch_row["name"], row["tag"], arch_row["preprocessing"]
    defaults = {"file_name": WEIGHTS_FILE.format(arch=arch, tag=tag), "file_hash": "", "url": f"hf-hub:timm/{arch}.{tag}",
                "source": "timm", "dataset": tag, "license": arch_row["license"], "resize": prep["resize"],
                "crop_fraction": prep["crop_fraction"], "interpolation": prep["interpolation"]}  # fmt: skip
    return WeightsSpec(**{**defaults, **row})


@lru_cache(maxsize=1)
def snapshot() -> dict[str, Any]:
    return json.loads(INDEX.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _all_units() -> dict[str, list[list[Any]]]:
    return json.loads(gzip.decompress(UNITS.read_bytes()))


T = TypeVar("T")


class Lazy(Sequence[T]):
    """A sequence read on first use whose ``len()`` reads nothing: ``tlzoo list-backbones`` counts each
    architecture's units and tags without loading the units file or making 1,826 weights specs."""

    def __init__(self, count: int, load: Callable[[], tuple[T, ...]]) -> None:
        self._count, self._load_items = count, load
        self._items: tuple[T, ...] | None = None

    def _load(self) -> tuple[T, ...]:
        if self._items is None:
            self._items = self._load_items()
        return self._items

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...
    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        return self._load()[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(self._load())

    def __repr__(self) -> str:
        return repr(self._load())

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[T, ...]:
        return self._load()


def spec_of(row: dict[str, Any], version: str = "", preps: dict[tuple[Any, ...], Preprocessing] | None = None) -> BackboneSpec:
    family = row["family"]
    p = row["preprocessing"]
    key = (*p["mean"], *p["std"], p["interpolation"], p["resize"], p["crop_fraction"])
    prep = None if preps is None else preps.get(key)
    if prep is None:  # architectures share a few dozen preprocessings: made once each
        prep = Preprocessing.from_dict(p)
        if preps is not None:
            preps[key] = prep
    return BackboneSpec(
        name=row["name"],
        framework="timm",
        builder="tlzoo_timm.build:build",
        input_size=(row["input_size"][0], row["input_size"][1]),
        feature_dim=row["feature_dim"],
        num_params=row["num_params"],
        preprocessing=prep,
        min_input_size=row["min_input_size"],
        weights=Lazy(len(row["weights"]), lambda: tuple(expand_weights(row, w) for w in row["weights"])),
        units=Lazy(row["units"], lambda: units_from_rows(_all_units().get(row["name"], []))),
        family=family,
        description=f"timm {family}: {row['name']} ({len(row['weights'])} pretrained tags)",
        license=row["license"],
        source=f"timm {version or snapshot().get('timm_version', '')}: timm.create_model({row['name']!r})",
        unit_modules=tuple(row["unit_modules"]),
        tap_layout=row["tap_layout"],
        input_multiple=row["input_multiple"],
    )


@hookimpl
def register_frameworks() -> list[FrameworkSpec]:
    return [
        FrameworkSpec(
            name="timm",
            adapter="tlzoo_timm.adapter:TimmAdapter",
            weights_cache="tlzoo_timm:weights_cache",
            input_layout="NCHW",
            head_only_runs=True,
            catalog=True,
            modules=("torch", "timm"),
            description="timm's architectures on the torch engine, weights from the Hugging Face hub",
        )
    ]


@lru_cache(maxsize=1)
def _specs() -> tuple[BackboneSpec, ...]:
    # Tens of thousands of small objects, none of them garbage: the cyclic collector would scan them again and
    # again while they are made (a tenth of `tlzoo list-backbones`' time).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        data = snapshot()
        preps: dict[tuple[Any, ...], Preprocessing] = {}
        return tuple(spec_of(row, data.get("timm_version", ""), preps) for row in data["backbones"])
    finally:
        if was_enabled:
            gc.enable()


@hookimpl
def register_backbones() -> list[BackboneSpec]:
    return list(_specs())
