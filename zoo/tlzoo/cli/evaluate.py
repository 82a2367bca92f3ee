"""tlzoo evaluate"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from .common import DecoderOption, DeviceOption, ProviderOption, Quiet, check_out, console, err_console, escape, handle_errors, print_json, print_table


@handle_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="A run directory, or an exported .onnx file.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Image folder (one sub-folder per class) or CSV.")],
    batch_size: Annotated[int, typer.Option(help="Images decoded and scored per batch.")] = 64,
    provider: ProviderOption = "auto",
    device: DeviceOption = "auto",
    decoder: DecoderOption = "auto",
    strict: Annotated[bool, typer.Option(help="Stop at an unreadable image instead of skipping it.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the metrics to this .json file, or the per-class table to a .csv.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Score a trained run (or an exported ONNX model) on labelled images."""
    from ..runs.evaluation import evaluate_model

    check_out(out, model, (".json", ".csv"), "the metrics (or the per-class table, .csv)")
    metrics = evaluate_model(model, data, batch_size=batch_size, strict=strict, provider=provider, device=device,
                             decoder=decoder)  # fmt: skip
    for item in metrics["skipped_images"]:
        err_console.print(f"warning: skipped unreadable image {item['path']} ({item['error']})", style="yellow", markup=False)
    if out is not None:
        _write(out, metrics)
    if json:
        print_json(metrics)
        return
    console.print(
        f"[bold]{escape(str(model))}[/] on {escape(str(data))}: accuracy [bold]{metrics['accuracy']:.4f}[/], log loss {metrics['log_loss']:.4f}, "
        f"macro F1 {metrics['macro_f1']:.4f}, balanced accuracy {metrics['balanced_accuracy']:.4f}, expected "
        f"calibration error {metrics['ece']:.4f} ({metrics['n']} images)"
    )
    if quiet:  # the headline metrics alone
        return
    table = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(Text(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    print_table(table)


def _write(path: Path, metrics: dict) -> None:  # type: ignore[type-arg]
    from ..files import atomic_write_json, atomic_write_text

    if path.suffix.lower() == ".json":
        atomic_write_json(path, metrics)
        return
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["class", "precision", "recall", "f1", "support"])
    for name, row in metrics["per_class"].items():
        writer.writerow([name, f"{row['precision']:.6f}", f"{row['recall']:.6f}", f"{row['f1']:.6f}", row["support"]])
    atomic_write_text(path, buf.getvalue())
