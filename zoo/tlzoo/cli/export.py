"""tlzoo export"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import UsageError
from ..registry import get_registry
from .common import console, err_console, escape, handle_errors, print_json, warn_plugins


@handle_errors
def export(
    format: Annotated[Optional[str], typer.Argument(help="Export format, e.g. onnx (see --list).")] = None,
    run: Annotated[Optional[Path], typer.Argument(help="A run directory from tlzoo train.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (default: RUN/model[.fp16|.int8].onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (13..23).")] = 18,
    batch: Annotated[str, typer.Option(help="'dynamic' or a fixed batch size.")] = "dynamic",
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision weights (inputs and outputs stay float32).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Static int8 quantization (QDQ), calibrated on --calibration.")] = False,
    calibration: Annotated[Optional[Path], typer.Option(help="Images for int8 calibration (default: the run's training images).")] = None,
    raw_input: Annotated[bool, typer.Option("--raw-input", help="Take uint8 NHWC images; resize and normalize in the graph.")] = False,
    check: Annotated[bool, typer.Option(help="Compare with the source model on the run's validation images.")] = True,
    atol: Annotated[float, typer.Option(help="fp32 check: largest allowed probability difference.")] = 1e-4,
    max_drop: Annotated[Optional[float], typer.Option(
        "--max-drop", help="fp16/int8: fail (and write nothing) if accuracy drops more than this many points vs fp32.",
    )] = None,
    list_formats: Annotated[bool, typer.Option("--list", help="List the export formats.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Export a trained run to a deployable file, checked against the source model."""
    warn_plugins()
    registry = get_registry()
    if list_formats:
        table = Table(title="export formats", title_justify="left")
        for col in ("format", "suffix", "description"):
            table.add_column(col)
        for spec in registry.exporters.values():
            table.add_row(spec.name, spec.file_suffix, spec.description)
        console.print(table)
        return
    if format is None or run is None:
        raise UsageError("usage: tlzoo export FORMAT RUN_DIR (tlzoo export --list shows the formats)")
    spec = registry.exporter(format)
    from ..backbone import import_object
    from ..trained import load_run

    trained = load_run(run)
    exporter = import_object(spec.exporter, f"exporter {spec.name}")
    options = {"opset": opset, "batch": batch, "fp16": fp16, "int8": int8, "calibration": calibration,
               "raw_input": raw_input, "check": check, "atol": atol, "max_drop": max_drop}  # fmt: skip
    with console.status(f"exporting {run} to {format}"):
        report = exporter(trained, out, options)
    if json:
        print_json(report)
        return
    console.print(f"wrote [bold]{escape(str(report['path']))}[/] ({report.get('variant', '')})")
    if "max_abs_diff" in report:
        console.print(
            f"checked on {report['check_images']} validation images: max |p - p_source| {report['max_abs_diff']:.2e}, "
            f"top-1 agreement {report['top1_agreement']:.2%}, accuracy {report['onnx_accuracy']:.4f} "
            f"(source {report['source_accuracy']:.4f})"
            + (f", change vs fp32 {report['accuracy_change_vs_fp32']:+.4f}" if "accuracy_change_vs_fp32" in report else "")
        )
    measured = report.get("check_images")
    if "accuracy_change_vs_fp32" in report and measured is not None and measured < 100:
        err_console.print(
            f"warning: the accuracy change was measured on only {measured} validation images, where one image is "
            f"{100 / measured:.1f} points: it cannot show a change of a point"
            + (f" (--max-drop {max_drop:g})" if max_drop is not None else "")
            + "; check on more data with tlzoo evaluate MODEL.onnx --data DIR",
            style="yellow", markup=False, highlight=False,
        )  # fmt: skip
    drop = -100 * report.get("accuracy_change_vs_fp32", 0.0)
    if drop > 1.0 and max_drop is None:
        err_console.print(
            f"warning: the {report['variant']} model loses {drop:.1f} accuracy points against fp32 on the validation "
            f"images; keep the fp32 model (or --fp16) where that matters, or gate the export with --max-drop",
            style="yellow", markup=False, highlight=False,
        )
