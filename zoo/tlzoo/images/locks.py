"""Portable coordination through files, for caches that several processes share (the decoded-pixel store).

- :class:`FileLock`: a lock file made with ``O_CREAT | O_EXCL`` (atomic on every OS and on NFSv3+), holding
  who took it. Its holder touches it while it works, so a lock whose holder died is recognised and broken:
  on this host by its process id, on another by a heartbeat older than ``stale_after``.
- :class:`Lease`: a marker saying "this process is using that folder", so that a clean-up (LRU eviction,
  ``tlzoo cache clear``) leaves it alone; markers of processes that are gone count for nothing.

Neither needs ``fcntl`` (absent on Windows) nor a daemon.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
import uuid
from pathlib import Path

from ..files import process_alive

HOST = socket.gethostname()
STALE_AFTER = 120.0  # seconds without a heartbeat after which another host's lock is taken as abandoned
BEAT_EVERY = 5.0


def _owner_gone(text: str, age: float, stale_after: float) -> bool:
    """Whether a lock or lease written as ``text`` (``{"host", "pid"}``), last touched ``age`` seconds ago, has no
    live owner: a dead process on this host, or silence past ``stale_after`` elsewhere (or in a garbled file)."""
    try:
        who = json.loads(text)
        host, pid = str(who["host"]), int(who["pid"])
    except (ValueError, KeyError, TypeError):
        return age > stale_after
    if host == HOST:
        return not process_alive(pid)
    return age > stale_after


def _stamp() -> str:
    return json.dumps({"host": HOST, "pid": os.getpid(), "since": time.time(), "id": uuid.uuid4().hex})


class FileLock:
    """``with FileLock(path) as held:``; ``held`` is False when another live process holds it (no waiting here:
    the caller decides what to do meanwhile). The holder calls :meth:`beat` as it works."""

    def __init__(self, path: Path, stale_after: float = STALE_AFTER) -> None:
        self.path, self.stale_after = Path(path), stale_after
        self.held = False
        self._text = ""
        self._beaten = 0.0

    def acquire(self) -> bool:
        for _ in range(3):  # at most: a stale lock broken, then taken (another breaker may win the race)
            self._text = _stamp()
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            try:
                os.write(fd, self._text.encode())
            finally:
                os.close(fd)
            self.held, self._beaten = True, time.monotonic()
            return True
        return False

    def _break_if_stale(self) -> bool:
        try:
            text = self.path.read_text(errors="replace")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: try again
        except OSError:
            return False
        if not _owner_gone(text, age, self.stale_after):
            return False
        # Moved aside before it is removed: if a fresh lock replaced the stale one meanwhile, it is put back.
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except OSError:
            return True
        try:
            if aside.read_text(errors="replace") != text:
                try:
                    os.link(aside, self.path)
                except OSError:
                    pass
        finally:
            aside.unlink(missing_ok=True)
        return True

    def beat(self) -> None:
        """Say the holder is alive (cheap; at most every few seconds)."""
        now = time.monotonic()
        if self.held and now - self._beaten > BEAT_EVERY:
            self._beaten = now
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            if self.path.read_text(errors="replace") == self._text:
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Lease:
    """This process is using ``folder``: a marker file in it, removed by :meth:`release` or when the process
    exits."""

    PREFIX = "in-use-"

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / f"{self.PREFIX}{HOST}-{os.getpid()}"
        try:
            self.path.write_text(_stamp())
        except OSError:  # a read-only cache is never cleaned up by this process either
            return
        atexit.register(self.release)

    def release(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


_leases: dict[Path, Lease] = {}


def lease(folder: Path) -> None:
    """Mark ``folder`` as in use by this process until :func:`release_leases` or its exit (once per folder)."""
    folder = Path(folder)
    if folder not in _leases:
        _leases[folder] = Lease(folder)


def release_leases() -> None:
    """This process uses none of the folders it leased any more (a run has ended)."""
    while _leases:
        _leases.popitem()[1].release()


def in_use(folder: Path) -> bool:
    """Whether a live process (this one included) holds a lease on ``folder``. Markers of processes that are
    gone are removed."""
    busy = False
    for marker in Path(folder).glob(f"{Lease.PREFIX}*"):
        try:
            text, age = marker.read_text(errors="replace"), time.time() - marker.stat().st_mtime
        except OSError:
            continue
        if _owner_gone(text, age, stale_after=24 * 3600.0):
            marker.unlink(missing_ok=True)
        else:
            busy = True
    return busy
