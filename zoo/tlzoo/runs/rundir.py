"""Run directories: a new one per run, numbered like Ultralytics' when the name is taken."""

from __future__ import annotations

from pathlib import Path

from ..files import reclaim_temp_files


def new_run_dir(out_dir: Path, name: str, *, exist_ok: bool = False) -> tuple[Path, bool]:
    """``out_dir/name``, or ``name-2``, ``name-3``... if taken (as Ultralytics numbers its runs).

    Returns the folder and whether this call created it. Creation is one ``mkdir`` that fails when the
    folder exists, so processes started at the same moment never share a run directory.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = out_dir / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
            return candidate, True
        except FileExistsError:
            if exist_ok and n == 1 and candidate.is_dir():
                reclaim_temp_files(candidate)
                return candidate, False
            n += 1


