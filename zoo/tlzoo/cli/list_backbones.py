"""tlzoo list-backbones"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..registry import get_registry
from ..weights import is_cached
from .common import console, handle_errors, human, print_json, warn_plugins


@handle_errors
def list_backbones(
    framework: Annotated[Optional[str], typer.Option(help="Only this framework's backbones (torch, keras, or a plugin's).")] = None,
    filter: Annotated[Optional[str], typer.Option("--filter", "-f", help="Glob on the name or id, e.g. 'resnet*'.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the backbones every installed plugin provides."""
    warn_plugins()
    registry = get_registry()
    specs = registry.list(framework=framework, pattern=filter)
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
    table = Table(title=f"{len(specs)} backbones", title_justify="left")
    for col, just in [("id", "left"), ("input", "right"), ("features", "right"), ("params", "right"),
                      ("units", "right"), ("plugin", "left"), ("weights (* = on disk)", "left")]:  # fmt: skip
        table.add_column(col, justify=just, no_wrap=(col == "id"))  # type: ignore[arg-type]
    for s in specs:
        weights = " ".join(w.tag + ("*" if is_cached(s, w) else "") for w in s.weights) or "-"
        table.add_row(
            s.id, f"{s.input_size[0]}x{s.input_size[1]}", str(s.feature_dim), human(s.num_params),
            str(len(s.units)) if s.units else "?", registry.owners.get(f"backbone {s.id}", ""), weights,
        )  # fmt: skip
    console.print(table)
