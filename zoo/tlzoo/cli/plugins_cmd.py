"""tlzoo plugins"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..plugins import get_host
from ..registry import get_registry
from .common import Quiet, console, escape, handle_errors, print_json, print_table


@handle_errors
def plugins(json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
            quiet: Quiet = False) -> None:
    """Show every plugin tlzoo found, what it registered, and any error (-q: names and status alone)."""
    get_registry()
    statuses = list(get_host().statuses.values())
    if json:
        print_json([s.to_dict() for s in statuses])
        return
    if quiet:
        for s in statuses:
            console.print(f"{s.name} {'ok' if s.ok else 'error'}", markup=False, highlight=False)
        return
    table = Table(title="tlzoo plugins", title_justify="left")
    for col in ("plugin", "version", "source", "registers", "status"):
        table.add_column(col)
    for s in statuses:
        registers = ", ".join([*(f"framework {f}" for f in s.frameworks), *s.backbones, *(f"export {e}" for e in s.exporters),
                               *(f"feature engine {e}" for e in s.feature_engines)])
        status = "[green]ok[/]" if s.ok else "[red]error:[/] " + "; ".join(escape(e) for e in s.errors)
        if s.notes:
            status += "\n" + "\n".join("[yellow]note:[/] " + escape(n) for n in s.notes)
        table.add_row(s.name, s.version or "-", s.source, registers or "-", status)
    print_table(table)
