"""Atomic writes, temporaries a killed process left, the fault tests' injection point, file hashes and sizes in
words: a crash never leaves a half-written file in place. The bottom layer: every package that writes a file
uses it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` through a temporary file: ``dest`` is the whole old file or the whole new one."""

    def copy(tmp: Path) -> None:
        shutil.copyfile(src, tmp)

    atomic_write(dest, copy)


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{temp_prefix()}{path.stem}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fault_point(f"write:{path.name}")
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make every run file private
        _fsync(tmp)
        fault_point(f"rename:{path.name}")
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Temporary files and folders are named ``.tlzoo-tmp.PID.*``, so that the next start can reclaim
# what a killed process left, without touching the temporaries of a process still running.
TEMP_PREFIX = ".tlzoo-tmp."
STALE_AFTER_S = 24 * 3600  # whatever the PID says (another machine's process on a shared disk)


def temp_prefix() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}."


def reclaim_temp_files(folder: Path) -> int:
    """Delete the temporaries that dead processes left in ``folder``; returns how many."""
    import shutil
    import time

    removed = 0
    try:
        entries = list(Path(folder).glob(f"{TEMP_PREFIX}*"))
    except OSError:
        return 0
    for entry in entries:
        pid_text = entry.name[len(TEMP_PREFIX) :].split(".", 1)[0]
        try:
            stale = time.time() - entry.lstat().st_mtime > STALE_AFTER_S
            if not stale and pid_text.isdigit() and process_alive(int(pid_text)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (this one included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def process_started(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch, to about a second (Linux: ``/proc``); None where
    it cannot be told. A PID names one process only while it lives: one alive again after a restart is another
    process, started later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
        return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """The fault tests' injection point: ``TLZOO_FAULT=write:model.pt`` kills the process (as ``kill -9``
    would) when it reaches that step; ``#N`` waits for the N-th time (``write:last_state.pt#2``), a glob
    matches several files (``write:*.npz``), and ``TLZOO_FAULT_ERRNO=ENOSPC`` raises that error instead.
    """
    wanted = os.environ.get("TLZOO_FAULT")
    if not wanted:
        return
    only_rank = os.environ.get("TLZOO_FAULT_RANK")  # data-parallel jobs: fault one rank only
    if only_rank is not None and only_rank != os.environ.get("RANK", "0"):
        return
    import fnmatch

    pattern, _, nth = wanted.partition("#")
    if not fnmatch.fnmatchcase(name, pattern):
        return
    _fault_counts[pattern] = _fault_counts.get(pattern, 0) + 1
    if _fault_counts[pattern] != int(nth or 1):
        return
    code = os.environ.get("TLZOO_FAULT_ERRNO")
    if code:
        import errno

        number = getattr(errno, code)
        raise OSError(number, os.strerror(number), name.partition(":")[2])
    os._exit(137)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entry for a renamed file, to the disk (best effort where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def hash_file(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read a megabyte at a time."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def human_bytes(n: float) -> str:
    """Bytes for a person: ``600 KiB``, ``31.5 MiB``, ``2.40 GiB`` (never ``0.00 GiB`` for a small amount)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} bytes"
