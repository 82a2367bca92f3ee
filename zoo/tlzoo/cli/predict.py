"""tlzoo predict"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import DecoderOption, DeviceOption, ProviderOption, Quiet, check_out, console, err_console, handle_errors, print_json


@handle_errors
def predict(
    model: Annotated[Path, typer.Argument(help="A run directory (runs/NAME) or an exported .onnx file.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top_k: Annotated[Optional[int], typer.Option(help="How many labels per image (single-label models; default 3).")] = None,
    threshold: Annotated[Optional[float], typer.Option(
        help="Multi-label models: one probability threshold for every label, instead of the run's own.")] = None,
    provider: ProviderOption = "auto",
    device: DeviceOption = "auto",
    decoder: DecoderOption = "auto",
    batch_size: Annotated[int, typer.Option(help="Images decoded and run per batch.")] = 32,
    strict: Annotated[bool, typer.Option(help="Stop at an unreadable image instead of skipping it.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the predictions to this .csv or .json file.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    quiet: Quiet = False,
) -> None:
    """Classify images with a trained run or an exported model (labels and preprocessing come with it)."""
    from ..runs.inference import check_batch_options, decoder_for, predict_stream
    from ..runs.loading import open_model

    from ..errors import UsageError
    from ..multilabel import check_threshold

    check_batch_options(top_k, batch_size)
    check_threshold(threshold)
    check_out(out, model, (".csv", ".json"), "predictions")
    classifier = open_model(model, provider=provider, device=device)
    multilabel = getattr(classifier, "thresholds", None) is not None
    if multilabel and top_k is not None:
        raise UsageError("--top-k is for single-label models: a multi-label model gives the labels over their "
                         "thresholds (set one for all with --threshold)")  # fmt: skip
    check_threshold(threshold, multilabel)
    top_k = 3 if top_k is None else top_k
    skipped: list[dict[str, str]] = []

    def skip(name: str, why: str) -> None:
        skipped.append({"path": name, "error": why})
        if not json:
            err_console.print(f"warning: skipped unreadable image {name} ({why})", style="yellow", markup=False)

    k = min(top_k, len(classifier.classes))
    rows: list[dict[str, Any]] = []
    stream = predict_stream(classifier, [*paths], top_k=None if multilabel else top_k, batch_size=batch_size,
                            strict=strict, on_skip=skip,
                            decoder=decoder_for(classifier, decoder), threshold=threshold)  # fmt: skip
    for prediction in stream:
        rows.append(prediction.to_dict())
        if not json:  # one line per image as soon as its batch is done: whole records, even when piped
            console.print(prediction.line(), markup=False, highlight=False)
    if not rows:
        from ..errors import DataError

        raise DataError(f"none of the {len(skipped)} image(s) given could be read: "
                        + ", ".join(r["path"] for r in skipped[:5]))  # fmt: skip
    where = classifier.provider
    if out is not None:
        _write(out, rows, k, classifier.classes if multilabel else None)
    if json:
        print_json({"model": str(model), "provider": where, "predictions": rows, "skipped_images": skipped})
        return
    if quiet:  # the predictions alone (and the skipped images' warnings)
        return
    summary = f"{len(rows)} image(s) classified with {model} on {where}"
    if skipped:
        summary += f"; {len(skipped)} unreadable image(s) skipped"
    err_console.print(summary + (f"; written to {out}" if out is not None else ""), markup=False)


def _write(path: Path, rows: list[dict[str, Any]], k: int, labels: list[str] | None = None) -> None:
    """The predictions as JSON, or CSV: ``path`` and the top ``k`` labels with their probabilities, or for a
    multi-label model (``labels``) ``path``, ``labels`` (``;``-joined, empty when none passes) and ``p:LABEL``."""
    import csv
    import io

    from ..files import atomic_write_json, atomic_write_text

    if path.suffix.lower() == ".json":
        atomic_write_json(path, rows)
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    if labels is not None:
        writer.writerow(["path", "labels", *(f"p:{name}" for name in labels)])
        for row in rows:
            writer.writerow([row["path"], ";".join(row["labels"]), *(f"{row[f'p:{name}']:.6f}" for name in labels)])
        atomic_write_text(path, buf.getvalue())
        return
    writer.writerow(["path", *(f"{kind}{i + 1}" for i in range(k) for kind in ("label", "probability"))])
    for row in rows:
        writer.writerow([row["path"], *(v for t in row["top"] for v in (t["label"], f"{t['probability']:.6f}"))])
    atomic_write_text(path, buf.getvalue())
