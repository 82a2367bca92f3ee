"""tlzoo datasets"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, console, handle_errors


@handle_errors
def datasets(
    name: Annotated[str, typer.Argument(help="digits")],
    out: Annotated[Path, typer.Argument(help="Folder to write the images to (one sub-folder per class).")],
    quiet: Quiet = False,
) -> None:
    """Write a real sample dataset that ships with an installed package as an image folder."""
    from ..images.datasets import write

    n = write(name, out)
    if not quiet:
        console.print(f"wrote {n} images to {out}", markup=False)
