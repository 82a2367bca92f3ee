"""tlzoo compare"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from .common import Quiet, console, escape, fail, handle_errors, print_json, print_table, warn_plugins


@handle_errors
def compare(
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Image folder or CSV (default: the embedded digits).")] = None,
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones, e.g. mobilenet_v2,keras/resnet50.")] = "mobilenet_v2",
    strategies: Annotated[str, typer.Option(help="e.g. feature-extract,fine-tune:freeze=8,two-stage,scratch; a sweep: fine-tune:freeze=0,4,8,all")] = "feature-extract,fine-tune,scratch",
    budget: Annotated[Optional[float], typer.Option(help="Minutes for the whole comparison; a combination running past it is stopped.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the runs and the leaderboard go.")] = Path("runs/compare"),
    onnx: Annotated[bool, typer.Option(help="Export each run to ONNX and time batch-1 inference.")] = True,
    json: Annotated[bool, typer.Option("--json", help="Print the leaderboard as JSON.")] = False,
    quiet: Quiet = False,
    **shared: Any,
) -> None:
    """Train every backbone x strategy on the same split and compare them side by side."""
    from ..comparison import cell, columns, common_args, compare as run_compare, ranked
    from ..images.datasets import ensure_digits
    from ..images.split import default_data_root

    warn_plugins()
    source = data or ensure_digits(default_data_root())
    common = common_args(**shared)
    names = [b.strip() for b in backbones.split(",") if b.strip()]

    def start(number: int, total: int, combo: Any) -> None:
        if not (json or quiet):
            console.print(f"[{number}/{total}] {combo.backbone} {combo.label}: training ...", markup=False)

    def show(row: dict[str, Any]) -> None:
        if not (json or quiet):
            result = f"test accuracy {row['accuracy']:.4f}, {row['train_s']:.1f} s" if row.get("status") == "ok" else row.get("error", "")
            console.print(f"      {row['backbone']} {row['strategy']}: {row['status']}, {result}", markup=False)

    rows = run_compare(Path(source), names, strategies, out_dir=out, budget_minutes=budget, common=common, onnx=onnx,
                       on_row=show, on_start=start)  # fmt: skip
    failed_all = bool(rows) and not any(r.get("status") == "ok" for r in rows)
    if json:
        print_json(ranked(rows))
        if failed_all:
            raise fail(f"every combination failed; see the errors in {out / 'leaderboard.md'}", 1)
        return
    board = ranked(rows)
    COLUMNS = columns(rows)  # noqa: N806 - the leaderboard's, multi-label ones for a multi-label comparison
    table = Table(title=Text(f"leaderboard ({out / 'leaderboard.md'})"), title_justify="left")
    for key, header in COLUMNS:
        table.add_column(header, no_wrap=True, justify="left" if key in ("backbone", "strategy", "status") else "right")
    for row in board:
        table.add_row(*(Text(cell(row, key)) for key, _ in COLUMNS))
    cells = [[cell(row, key) for row in board] for key, _ in COLUMNS]
    natural = sum(max(len(header), *(len(c) for c in col)) + 3 for (_, header), col in zip(COLUMNS, cells)) + 1
    if natural <= console.width:  # every cell whole
        print_table(table)
    else:  # too narrow for the table (or piped to a file): one whole record per line, never a cut cell
        console.print(f"leaderboard ({out / 'leaderboard.md'}):", markup=False)
        for number, row in enumerate(board, start=1):
            fields = [f"{header} {cell(row, key)}" for key, header in COLUMNS[2:] if row.get(key) is not None]
            console.print(f"{number}. {row['backbone']} {row['strategy']}: " + ", ".join(fields), markup=False)
    if failed_all:
        first = rows[0].get("error", "")
        raise fail(escape(f"every combination failed (the first: {first}); see {out / 'leaderboard.md'}"), 1)
    best = next((r for r in ranked(rows) if r.get("status") == "ok"), None)
    if best is not None:
        console.print(f"best: {best['backbone']} {best['strategy']} -> tlzoo export onnx {best['run_dir']}", markup=False)


def _add_shared_options() -> None:
    """train's settings that every combination shares (declared once, in TrainConfig), after compare's own."""
    from ..comparison import shared_settings
    from ..settings import add_options

    add_options(compare, shared_settings())


_add_shared_options()
