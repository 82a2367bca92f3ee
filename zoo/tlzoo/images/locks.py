"""Portable coordination through files, for caches that several processes share (the decoded-pixel store).

- :class:`FileLock`: a lock file made with ``O_CREAT | O_EXCL`` (atomic on every OS and on NFSv3+), holding
  who took it. Its holder touches it while it works, so a lock whose holder died is recognised and broken: on
  any host by a heartbeat older than ``stale_after``, and on this host at once when its process is gone or its
  process id now names another process (one started after the lock was written: a PID alive again after a
  container restart). An empty or garbled lock (its writer died between creating and writing it) is broken
  after a few seconds.
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

from ..files import process_alive, process_started

HOST = socket.gethostname()
STALE_AFTER = 120.0  # seconds without a heartbeat after which another host's lock is taken as abandoned
BEAT_EVERY = 5.0
GARBLED_AFTER = 3.0  # seconds after which an empty or unreadable lock is taken as its writer's crash
SAME_PROCESS = 2.0  # seconds within which two start times of one PID are the same process (/proc's precision)


def _owner_gone(text: str, age: float, stale_after: float) -> bool:
    """Whether a lock or lease written as ``text`` (``{"host", "pid", "since", "started"}``), last touched ``age``
    seconds ago, has no live owner: silence past ``stale_after``; on this host, a process that is gone or a PID
    that now names a process started after the lock was written; an empty or garbled file a few seconds old."""
    try:
        who = json.loads(text)
        host, pid = str(who["host"]), int(who["pid"])
    except (ValueError, KeyError, TypeError):
        return age > GARBLED_AFTER
    if host != HOST:
        return age > stale_after
    if not process_alive(pid):
        return True
    started = process_started(pid)
    if started is not None and isinstance(who.get("started"), (int, float)):
        return abs(started - who["started"]) > SAME_PROCESS  # the writer itself, or another process with its PID
    if started is not None and isinstance(who.get("since"), (int, float)) and started > who["since"] + SAME_PROCESS:
        return True  # the PID's process started after the lock was written: not its writer
    return age > stale_after  # the writer cannot be told apart: its heartbeat says


def owner(text: str) -> str:
    """Who holds a lock, in words: ``process 1234 on host``."""
    try:
        who = json.loads(text)
        return f"process {int(who['pid'])} on {who['host']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


def _stamp() -> str:
    return json.dumps({"host": HOST, "pid": os.getpid(), "since": time.time(), "started": process_started(os.getpid()),
                       "id": uuid.uuid4().hex})  # fmt: skip


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
            except OSError:  # a full disk: no empty lock left behind for others to wait on
                os.close(fd)
                self.path.unlink(missing_ok=True)
                raise
            os.close(fd)
            self.held, self._beaten = True, time.monotonic()
            return True
        return False

    def holder(self) -> str:
        """Who holds the lock now, in words (see :func:`owner`)."""
        try:
            return owner(self.path.read_text(errors="replace"))
        except OSError:
            return "another process"

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
