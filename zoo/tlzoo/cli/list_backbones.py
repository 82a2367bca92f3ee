"""tlzoo list-backbones"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..registry import get_registry
from ..specs import BackboneSpec
from ..weights import cache_dir, is_cached
from .common import Quiet, console, handle_errors, human, print_json, print_table, warn_plugins


@handle_errors
def list_backbones(
    framework: Annotated[Optional[str], typer.Option(help="Only this framework's backbones (torch, keras, or a plugin's).")] = None,
    filter: Annotated[Optional[str], typer.Option("--filter", "-f", help="Glob on the name or id, e.g. 'resnet*'.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    quiet: Quiet = False,
) -> None:
    """List the backbones every installed plugin provides (-q: their ids alone, one a line, catalogs included)."""
    warn_plugins()
    registry = get_registry()
    specs = registry.list(framework=framework, pattern=filter)
    if quiet:
        console.print("\n".join(s.id for s in specs), markup=False, highlight=False, soft_wrap=True)
        return
    if json:
        print_json(
            [
                {
                    "id": s.id,
                    "name": s.name,
                    "framework": s.framework,
                    "input_size": list(s.input_size),
                    "feature_dim": s.feature_dim,
                    "num_params": s.num_params,
                    "units": len(s.units),
                    "weights": [{"tag": w.tag, "on_disk": is_cached(s, w)} for w in s.weights],
                    "plugin": registry.owners.get(f"backbone {s.id}", ""),
                    "short_name_taken_by": registry.shadowed.get(s.id),
                }
                for s in specs
            ]
        )
        return
    # A catalog (timm's whole registry) is folded to one line per family unless asked for by name or filter.
    folded = set() if framework or filter else {f for f in registry.frameworks() if registry.framework(f).catalog}
    shown = [s for s in specs if s.framework not in folded]
    table = Table(title=f"{len(shown)} backbones", title_justify="left")
    for col, just in [("id", "left"), ("input", "right"), ("features", "right"), ("params", "right"),
                      ("units", "right"), ("plugin", "left"), ("weights (* = on disk)", "left")]:  # fmt: skip
        table.add_column(col, justify=just, no_wrap=(col == "id"))  # type: ignore[arg-type]
    for s in shown:
        weights = " ".join(w.tag + ("*" if is_cached(s, w) else "") for w in s.weights) or "-"
        table.add_row(
            s.id, f"{s.input_size[0]}x{s.input_size[1]}", str(s.feature_dim), human(s.num_params),
            str(len(s.units)) if s.units else "?", registry.owners.get(f"backbone {s.id}", ""), weights,
        )  # fmt: skip
    print_table(table)
    for fw in sorted(folded):
        _print_families(fw, [s for s in specs if s.framework == fw])


def _print_families(framework: str, members: list[BackboneSpec]) -> None:
    """One plain line per family (a table of a hundred rows would cost more than the whole listing)."""
    families: dict[str, list[BackboneSpec]] = {}
    for s in members:
        families.setdefault(s.family or s.name, []).append(s)
    on_disk = _files_on_disk(framework)
    lines = [f"{len(members)} {framework} backbones in {len(families)} families (`tlzoo list-backbones --framework "
             f"{framework}` or `--filter '*NAME*'` lists them):"]  # fmt: skip
    width = max(len(f) for f in families) + len(framework) + 8
    for family, group in sorted(families.items()):
        tags = sum(len(m.weights) for m in group)
        cached = sum(w.file_name in on_disk for m in group for w in m.weights) if on_disk else 0
        name = f"{framework}/{family} ({len(group)})"
        lines.append(f"  {name:<{width}} {_span(m.input_size[0] for m in group):>9} px  "
                     f"{_span(m.feature_dim for m in group):>9} features  {_span((m.num_params for m in group), human):>13}"
                     f"  {tags} tags" + (f", {cached} on disk" if cached else ""))  # fmt: skip
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


def _files_on_disk(framework: str) -> set[str]:
    try:
        return set(os.listdir(cache_dir(framework)))
    except OSError:
        return set()


def _span(values: Iterable[int], fmt: Callable[[int], str] = str) -> str:
    found = sorted(set(values))
    return fmt(found[0]) if len(found) == 1 else f"{fmt(found[0])}-{fmt(found[-1])}"
