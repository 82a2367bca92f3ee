"""tlzoo predict"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import console, handle_errors, print_json


@handle_errors
def predict(
    model: Annotated[Path, typer.Argument(help="An ONNX file from tlzoo export.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top_k: Annotated[int, typer.Option(help="How many labels per image.")] = 3,
    provider: Annotated[str, typer.Option(help="auto | cpu | cuda | tensorrt")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Classify images with an exported model (labels and preprocessing come from the file)."""
    from ..predictor import Predictor

    predictor = Predictor(model, provider=provider)
    results = predictor.predict([*paths], top_k=top_k, batch_size=batch_size)
    if json:
        print_json({"provider": predictor.provider, "predictions": [r.to_dict() for r in results]})
        return
    table = Table(title=f"{model.name} on {predictor.provider}", title_justify="left")
    table.add_column("image")
    for i in range(min(top_k, len(predictor.classes))):
        table.add_column(f"#{i + 1}")
    for r in results:
        table.add_row(r.path, *(f"{label} {p:.3f}" for label, p in r.top))
    console.print(table)
