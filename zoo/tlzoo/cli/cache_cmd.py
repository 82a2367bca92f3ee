"""tlzoo cache: what tlzoo's cache holds (features, the decoded-pixel store, exports), how large, and clearing it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..files import human_bytes
from .common import Quiet, console, handle_errors, print_json

app = typer.Typer(help="List, size and clear tlzoo's cache (features, decoded pixels, exports).", no_args_is_help=True)

KINDS = ("features", "store", "exports")


def _root() -> Path:
    from ..training.cache import cache_root

    return cache_root().parent


def _parts(root: Path) -> dict[str, list[Path]]:
    """Each kind's files and folders (the feature cache's aliases count with its entries)."""
    features = root / "features"
    return {
        "features": [p for p in features.iterdir() if p.name != "engines"] if features.is_dir() else [],
        "store": [root / "store"] if (root / "store").is_dir() else [],
        "exports": [p for p in (features / "engines", root / "tensorrt") if p.is_dir()],
    }


def _size(paths: list[Path]) -> tuple[int, int]:
    """(bytes, files) under ``paths``."""
    total = count = 0
    for path in paths:
        for f in [path] if path.is_file() else path.rglob("*"):
            if f.is_file():
                total += f.stat().st_size
                count += 1
    return total, count


@app.command("list")
@handle_errors
def list_(json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
          quiet: Quiet = False) -> None:
    """What the cache holds, by kind, with sizes (TLZOO_CACHE moves it; TLZOO_STORE_MAX_GB caps the store)."""
    from ..limits import store_cap_bytes

    root = _root()
    rows = {kind: _size(paths) for kind, paths in _parts(root).items()}
    if json:
        print_json({"root": str(root), "store_cap_bytes": store_cap_bytes(),
                    **{kind: {"bytes": b, "files": n} for kind, (b, n) in rows.items()}})  # fmt: skip
        return
    if quiet:  # the total alone
        console.print(human_bytes(sum(b for b, _ in rows.values())), markup=False, highlight=False)
        return
    console.print(f"tlzoo cache: {root}", markup=False, highlight=False)
    what = {"features": "bottleneck features and their aliases", "store": "decoded pixels (every strategy reads and fills it)",
            "exports": "the feature engines' ONNX exports, TensorRT engines and auto's measurements"}  # fmt: skip
    for kind, (b, n) in rows.items():
        console.print(f"  {kind:<9} {human_bytes(b):>10} in {n} file(s): {what[kind]}", markup=False, highlight=False)
    cap = store_cap_bytes()
    shown = "none" if cap is None else "off: no store" if cap == 0 else human_bytes(cap)
    console.print(f"  the store's cap: {shown} (TLZOO_STORE_MAX_GB)", markup=False, highlight=False)


@app.command("clear")
@handle_errors
def clear(
    kind: Annotated[str, typer.Argument(help="features | store | exports | all")],
    quiet: Quiet = False,
) -> None:
    """Delete one kind of cached data (or all of it); a later run recomputes what it needs."""
    kind = kind.strip().lower()
    if kind not in (*KINDS, "all"):
        raise UsageError(f"tlzoo cache clear {kind!r}: give one of {', '.join(KINDS)} or all")
    from ..images import store

    root = _root()
    parts = _parts(root)
    freed = kept = 0
    for name in KINDS if kind == "all" else (kind,):
        if name == "store":  # a store another run is reading stays (it would lose its images mid-epoch)
            size, kept = store.clear(store.store_root(root))
            freed += size
            continue
        size, _ = _size(parts[name])
        for path in parts[name]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        freed += size
    if not quiet:
        console.print(f"cleared {kind} from {root}: {human_bytes(freed)} freed", markup=False, highlight=False)
    if kept:
        console.print(f"kept {kept} decoded-pixel store bucket(s) that a running tlzoo process is using",
                      markup=False, highlight=False)  # fmt: skip


@app.command("prune")
@handle_errors
def prune(quiet: Quiet = False) -> None:
    """Drop the decoded-pixel store's remembered hashes of files that are gone or changed (a run does this by
    itself once half the remembered lines are out of date)."""
    from ..images import store
    from ..images.aliases import Names

    names = Names(store.store_root(_root()))
    before = len(names.known)
    if not names.path.is_file():
        if not quiet:
            console.print("nothing to prune: the store remembers no files", markup=False, highlight=False)
        return
    kept = names.compact()
    if not quiet:
        console.print(f"pruned the store's file hashes ({names.path}): {before - kept} of {before} dropped (files "
                      f"gone or changed), {kept} kept", markup=False, highlight=False)  # fmt: skip
