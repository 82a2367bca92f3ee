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
    threshold: Annotated[Optional[float], typer.Option(
        help="Multi-label models: one probability threshold for every label, instead of the run's own.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Score a trained run (or an exported ONNX model) on labelled images."""
    from ..runs.evaluation import evaluate_model

    check_out(out, model, (".json", ".csv"), "the metrics (or the per-class table, .csv)")
    metrics = evaluate_model(model, data, batch_size=batch_size, strict=strict, provider=provider, device=device,
                             decoder=decoder, threshold=threshold)  # fmt: skip
    for item in metrics["skipped_images"]:
        err_console.print(f"warning: skipped unreadable image {item['path']} ({item['error']})", style="yellow", markup=False)
    if out is not None:
        _write(out, metrics)
    if json:
        print_json(metrics)
        return
    multilabel = "per_label" in metrics
    if multilabel:
        console.print(
            f"[bold]{escape(str(model))}[/] on {escape(str(data))}: mean average precision "
            f"[bold]{metrics['mean_average_precision']:.4f}[/], micro F1 {metrics['micro_f1']:.4f}, macro F1 "
            f"{metrics['macro_f1']:.4f}, subset accuracy {metrics['subset_accuracy']:.4f}, Hamming loss "
            f"{metrics['hamming_loss']:.4f}, log loss {metrics['log_loss']:.4f}, mean expected calibration error "
            f"{metrics['ece']:.4f} ({metrics['n']} images)"
        )  # fmt: skip
    else:
        console.print(
            f"[bold]{escape(str(model))}[/] on {escape(str(data))}: accuracy [bold]{metrics['accuracy']:.4f}[/], log loss {metrics['log_loss']:.4f}, "
            f"macro F1 {metrics['macro_f1']:.4f}, balanced accuracy {metrics['balanced_accuracy']:.4f}, expected "
            f"calibration error {metrics['ece']:.4f} ({metrics['n']} images)"
        )
    if quiet:  # the headline metrics alone
        return
    columns = _COLUMNS[multilabel]
    table = Table(title="per label" if multilabel else "per class", title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col in ("class", "label") else "right")
    for name, row in metrics["per_label" if multilabel else "per_class"].items():
        table.add_row(Text(name), *(_cell(row, col) for col in columns[1:]))
    print_table(table)


_COLUMNS = {False: ("class", "precision", "recall", "f1", "support"),
            True: ("label", "ap", "precision", "recall", "f1", "threshold", "support")}  # fmt: skip


def _cell(row: dict, col: str, digits: int = 3) -> str:  # type: ignore[type-arg]
    value = row[col]
    return "-" if value is None else str(value) if col == "support" else f"{value:.{digits}f}"


def _write(path: Path, metrics: dict) -> None:  # type: ignore[type-arg]
    from ..files import atomic_write_json, atomic_write_text

    if path.suffix.lower() == ".json":
        atomic_write_json(path, metrics)
        return
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    multilabel = "per_label" in metrics
    columns = _COLUMNS[multilabel]
    writer.writerow(columns)
    for name, row in metrics["per_label" if multilabel else "per_class"].items():
        writer.writerow([name, *(_cell(row, col, 6) for col in columns[1:])])
    atomic_write_text(path, buf.getvalue())
