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
from tlzoo.specs import Preprocessing, UnitSpec, WeightsSpec, units_from_rows

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


def expand_weights(arch_row: dict[str, Any], row: dict[str, Any] | str) -> WeightsSpec:
    """A weights row of the index (a bare tag when nothing differs from what the architecture implies) as a spec."""
    return _expand(arch_row["name"], arch_row["preprocessing"], arch_row["license"], row)


def _expand(arch: str, prep: dict[str, Any], license: str, row: dict[str, Any] | str) -> WeightsSpec:
    if isinstance(row, str):
        row = {"tag": row}
    tag = row["tag"]
    defaults = {"file_name": WEIGHTS_FILE.format(arch=arch, tag=tag), "file_hash": "", "url": f"hf-hub:timm/{arch}.{tag}",
                "source": "timm", "dataset": tag, "license": license, "resize": prep["resize"],
                "crop_fraction": prep["crop_fraction"], "interpolation": prep["interpolation"]}  # fmt: skip
    return WeightsSpec(**{**defaults, **row})


def _expand_all(arch: str, prep: dict[str, Any], license: str, rows: list[Any]) -> tuple[WeightsSpec, ...]:
    return tuple(_expand(arch, prep, license, row) for row in rows)


def _units_of(arch: str) -> tuple[UnitSpec, ...]:
    return units_from_rows(_all_units().get(arch, []))


# index.json is column-wise: one list per field, preprocessings and unit-module sets stored once and referred
# to by position, a tag with nothing of its own stored as its bare name. Parsed, it is a few thousand objects
# instead of a hundred thousand: `tlzoo list-backbones` pays about a quarter of what row dicts cost.
INDEX_FORMAT = 2
COLUMNS = ("name", "family", "input_size", "fixed_input_size", "feature_dim", "num_params", "preprocessing",
           "weights", "license", "unit_modules", "tap_layout", "input_multiple", "min_input_size", "units",
           "group_matcher")  # fmt: skip
SHARED = {"preprocessing": "preprocessings", "unit_modules": "unit_module_sets"}


def pack_index(rows: list[dict[str, Any]], header: dict[str, Any]) -> dict[str, Any]:
    """Rows (one dict per architecture, as :func:`_generate.describe` makes them) in the index's column form."""
    index: dict[str, Any] = {**header, "format": INDEX_FORMAT, "preprocessings": [], "unit_module_sets": []}
    positions: dict[str, dict[str, int]] = {field: {} for field in SHARED}
    columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for row in rows:
        if set(row) != set(COLUMNS):
            raise ValueError(f"{row.get('name')}: index row fields {sorted(row)} are not {sorted(COLUMNS)}")
        for c in COLUMNS:
            value = row[c]
            if c in SHARED:
                key = json.dumps(value, sort_keys=True)
                if key not in positions[c]:
                    positions[c][key] = len(index[SHARED[c]])
                    index[SHARED[c]].append(value)
                value = positions[c][key]
            elif c == "weights":
                value = [w["tag"] if set(w) == {"tag"} else w for w in value]
            columns[c].append(value)
    index["columns"] = columns
    return index


def index_rows(index: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The index (by default the shipped one) as one dict per architecture: the inverse of :func:`pack_index`."""
    index = snapshot() if index is None else index
    columns = index["columns"]
    rows = []
    for values in zip(*(columns[c] for c in COLUMNS)):
        row = dict(zip(COLUMNS, values))
        for c, table in SHARED.items():
            row[c] = index[table][row[c]]
        row["weights"] = [{"tag": w} if isinstance(w, str) else w for w in row["weights"]]
        rows.append(row)
    return rows


@lru_cache(maxsize=1)
def snapshot() -> dict[str, Any]:
    index = json.loads(INDEX.read_text(encoding="utf-8"))
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{INDEX} is not in index format {INDEX_FORMAT}: regenerate it (python -m tlzoo_timm._generate)")
    return index


@lru_cache(maxsize=1)
def _all_units() -> dict[str, list[list[Any]]]:
    return json.loads(gzip.decompress(UNITS.read_bytes()))


T = TypeVar("T")


class Lazy(Sequence[T]):
    """A sequence read on first use whose ``len()`` reads nothing: ``tlzoo list-backbones`` counts each
    architecture's units and tags without loading the units file or making 1,826 weights specs."""

    __slots__ = ("_count", "_make", "_args", "_items")  # a thousand of them per listing: no dict, no closure each

    def __init__(self, count: int, make: Callable[..., tuple[T, ...]], *args: Any) -> None:
        self._count, self._make, self._args = count, make, args
        self._items: tuple[T, ...] | None = None

    def _load(self) -> tuple[T, ...]:
        if self._items is None:
            self._items = self._make(*self._args)
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


def spec_of(row: dict[str, Any], version: str = "") -> BackboneSpec:
    """One index row (see :func:`index_rows`) as a backbone spec."""
    prep = Preprocessing.from_dict(row["preprocessing"])
    source = f"timm {version or snapshot().get('timm_version', '')}"
    return _spec(prep, tuple(row["unit_modules"]), source, *(row[c] for c in COLUMNS))


def _spec(prep: Preprocessing, unit_modules: tuple[str, ...], source: str, name: str, family: str,
          input_size: list[int], fixed_input_size: bool, feature_dim: int, num_params: int, prep_row: dict[str, Any],
          weights: list[Any], license: str, _unit_modules: Any, tap_layout: str, input_multiple: int,
          min_input_size: int, units: int, group_matcher: bool) -> BackboneSpec:  # fmt: skip
    """A spec from one architecture's values in :data:`COLUMNS` order (``prep`` and ``unit_modules`` made once
    for every architecture that shares them)."""
    return BackboneSpec(
        name=name,
        framework="timm",
        builder="tlzoo_timm.build:build",
        input_size=(input_size[0], input_size[1]),
        feature_dim=feature_dim,
        num_params=num_params,
        preprocessing=prep,
        min_input_size=min_input_size,
        weights=Lazy(len(weights), _expand_all, name, prep_row, license, weights),
        units=Lazy(units, _units_of, name),
        family=family,
        description=f"timm {family}: {name} ({len(weights)} pretrained tags)",
        license=license,
        source=f"{source}: timm.create_model({name!r})",
        unit_modules=unit_modules,
        tap_layout=tap_layout,
        input_multiple=input_multiple,
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
    # Thousands of small objects, none of them garbage: the cyclic collector would scan them again and
    # again while they are made (a tenth of `tlzoo list-backbones`' time).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        index = snapshot()
        columns = index["columns"]
        preps = [Preprocessing.from_dict(p) for p in index["preprocessings"]]  # a few dozen, shared
        unit_sets = [tuple(m) for m in index["unit_module_sets"]]
        source = f"timm {index.get('timm_version', '')}"
        tables = index["preprocessings"]
        at = COLUMNS.index("preprocessing"), COLUMNS.index("unit_modules")
        specs = []
        for values in zip(*(columns[c] for c in COLUMNS)):
            row = list(values)
            p, m = row[at[0]], row[at[1]]
            row[at[0]] = tables[p]
            specs.append(_spec(preps[p], unit_sets[m], source, *row))
        return tuple(specs)
    finally:
        if was_enabled:
            gc.enable()


@hookimpl
def register_backbones() -> list[BackboneSpec]:
    return list(_specs())
