"""The spec generator for plugin authors: build each model once, write the static metadata a plugin ships.

A plugin lists *draft* specs (name, framework, builder, input size, preprocessing, weights,
descriptions; ``feature_dim``, ``num_params`` and ``units`` may be left at 0 and empty) and
ships the JSON this module writes from them, so that ``tlzoo list-backbones`` and
``tlzoo describe`` never import a framework::

    tlzoo spec my_plugin.drafts:DRAFTS --out my_plugin/backbones.json
    tlzoo spec my_plugin.drafts:DRAFTS --out my_plugin/backbones.json --check   # in CI

and in the plugin, ``register_backbones`` returns ``tlzoo.specs.load_specs_json(that file)``.
``DRAFTS`` is a list of :class:`tlzoo.BackboneSpec` or a function returning one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .errors import UsageError
from .plugins import load_object
from .specs import BackboneSpec, UnitSpec, load_specs_json


def complete(draft: BackboneSpec) -> BackboneSpec:
    """The draft with ``feature_dim``, ``num_params`` and ``units`` read off the model its builder makes
    (built once, with random weights, at the draft's input size, through its framework's adapter)."""
    from .backbone import build

    backbone = build(draft, None, draft.input_size, seed=0)
    dim = backbone.feature_width()
    units = tuple(UnitSpec(u.name, u.kind, u.params) for u in backbone.units)
    return dataclasses.replace(draft, feature_dim=dim, num_params=backbone.num_params, units=units)


def drafts_from(target: str) -> list[BackboneSpec]:
    """``module:attribute`` naming a list of draft specs, or a function returning one."""
    value: Any = load_object(target, "draft specs")
    if callable(value):
        value = value()
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, BackboneSpec) for s in value):
        raise UsageError(f"{target} must be a list of tlzoo.BackboneSpec (or a function returning one)")
    return list(value)


def generate(drafts: list[BackboneSpec], out: Path, generator: str = "") -> list[BackboneSpec]:
    """Complete every draft and write ``{"backbones": [...]}`` to ``out`` (atomically)."""
    from .files import atomic_write_text

    specs = [complete(d) for d in drafts]
    payload = {"generator": generator or "tlzoo.specgen", "backbones": [s.to_dict() for s in specs]}
    atomic_write_text(out, json.dumps(payload, indent=1) + "\n")
    return specs


def check(drafts: list[BackboneSpec], shipped: Path) -> list[str]:
    """How the shipped JSON differs from what the drafts build today (empty when it is current)."""
    if not shipped.is_file():
        return [f"{shipped} does not exist: generate it first"]
    have = {s.id: s for s in load_specs_json(shipped)}
    problems = []
    for draft in drafts:
        want = complete(draft)
        got = have.pop(want.id, None)
        if got is None:
            problems.append(f"{want.id}: missing from {shipped.name}")
            continue
        for field in ("feature_dim", "num_params", "units", "input_size", "builder", "preprocessing", "weights"):
            if getattr(got, field) != getattr(want, field):
                problems.append(f"{want.id}: {field} is out of date")
    problems += [f"{extra}: in {shipped.name} but not among the drafts" for extra in have]
    return problems
