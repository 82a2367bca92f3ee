"""tlzoo evaluate"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from .common import console, escape, handle_errors, print_json


@handle_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="A run directory, or an exported .onnx file.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Image folder (one sub-folder per class) or CSV.")],
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    out: Annotated[Optional[Path], typer.Option(help="Also write the metrics to this JSON file.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Score a trained run (or an exported ONNX model) on labelled images."""
    from ..evaluation import evaluate_model

    metrics = evaluate_model(model, data, batch_size=batch_size)
    if out is not None:
        from ..rundir import atomic_write_json

        atomic_write_json(out, metrics)
    if json:
        print_json(metrics)
        return
    console.print(
        f"[bold]{escape(str(model))}[/] on {escape(str(data))}: accuracy [bold]{metrics['accuracy']:.4f}[/], log loss {metrics['log_loss']:.4f}, "
        f"macro F1 {metrics['macro_f1']:.4f} ({metrics['n']} images)"
    )
    table = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(Text(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
