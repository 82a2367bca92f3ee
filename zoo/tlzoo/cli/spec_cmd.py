"""tlzoo spec: write (or --check) the static backbones.json a plugin ships, from its draft specs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .common import Quiet, console, err_console, escape, handle_errors


@handle_errors
def spec(
    drafts: Annotated[str, typer.Argument(help="module:attribute naming a list of draft BackboneSpecs (or a function returning one).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The JSON file the plugin ships (load it with tlzoo.specs.load_specs_json).")],
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if OUT differs from what the drafts build today.")] = False,
    quiet: Quiet = False,
) -> None:
    """Build each draft's model once and write feature_dim, num_params and units into the plugin's backbones.json."""
    from ..specgen import check as check_specs
    from ..specgen import drafts_from, generate

    listed = drafts_from(drafts)
    if not listed:
        raise UsageError(f"{drafts} lists no backbones")
    if check:
        problems = check_specs(listed, out)
        for problem in problems:
            err_console.print(f"out of date: {escape(problem)}", markup=False)
        if problems:
            raise typer.Exit(1)
        if not quiet:
            console.print(f"{out} is current ({len(listed)} backbones)", markup=False)
        return
    specs = generate(listed, out, generator=f"tlzoo spec {drafts}")
    for s in specs if not quiet else []:
        console.print(f"{s.id}: {s.feature_dim} features, {s.num_params:,} parameters, {len(s.units)} units", markup=False)
    if not quiet:
        console.print(f"wrote {out}", markup=False)
