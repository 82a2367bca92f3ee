"""The store's aliases: each file's path, size, times and inode -> the sha256 of its bytes, so a run over
unchanged files reads none of them (:class:`Names`, kept in ``names.log`` beside the store's buckets)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .locks import FileLock


class Names:
    """path, size, mtime, inode, ctime -> the file's sha256, remembered so that unchanged files are not read.

    An append-only log (``names.log``, one JSON ``[key, sha256]`` a line, the latest line of a key winning): a
    save appends only the entries new since the last one, a reload reads only what other processes appended
    since the last read, so filling the store writes one entry per file at any size. The log is compacted
    when at least half its lines are dead (a key written again, or a path whose file changed and was hashed
    anew): entries of files that are gone or changed are dropped then and the rest rewritten in one atomic
    replace, O(live entries), which the dead lines have paid for (each at most once). A log of live entries
    only (a fill) is never rewritten; ``tlzoo cache`` compacts it on demand (:meth:`compact`)."""

    LOG = "names.log"
    LEGACY = "names.json"  # the whole map rewritten at every save, before the log: read once, then dropped
    COMPACT_AT = 4096  # lines: a log this short is never compacted

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / self.LOG
        self.known: dict[str, str] = {}
        self.mine: dict[str, str] = {}
        self.lines = 0  # lines read from the log, header included
        self.live_after_compaction = 0
        self.dead = 0  # lines read that a later one made dead (the same key again, or the same path's new key)
        self._path_key: dict[str, str] = {}
        self._inode: int | None = None
        self._offset = 0
        self.reload()

    def reload(self) -> None:
        """Take in what was appended since the last read (everything, after a compaction replaced the file)."""
        try:
            st = os.stat(self.path)
        except OSError:
            if self._inode is None and not self.known:
                self.known.update(self._legacy())
            self.known.update(self.mine)
            return
        if st.st_ino != self._inode or st.st_size < self._offset:  # a new file: read it whole
            self.known, self._offset, self.lines, self._inode = self._legacy(), 0, 0, st.st_ino
            self.live_after_compaction, self.dead, self._path_key = 0, 0, {}
        if st.st_size > self._offset:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    tail = f.read(st.st_size - self._offset)
            except OSError:
                tail = b""
            whole = tail[: tail.rfind(b"\n") + 1]  # a line another process is appending right now: next time
            self._offset += len(whole)
            for line in whole.splitlines():
                self.lines += 1
                self._take(line)
        self.known.update(self.mine)

    def _take(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:  # a torn or damaged line: that file is hashed again, nothing else is lost
            return
        if isinstance(entry, dict):  # the header a compaction writes
            live = entry.get("live")
            self.live_after_compaction = live if isinstance(live, int) else 0
        elif isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry):
            key = entry[0]
            path = key.split("\0", 1)[0]
            before = self._path_key.get(path)  # the path's key in an earlier line of the log
            if before is not None:  # this line makes that one dead
                self.dead += 1
                if before != key:
                    self.known.pop(before, None)  # the path's file changed: its old content is not it any more
            self._path_key[path] = key
            self.known[key] = entry[1]

    def _legacy(self) -> dict[str, str]:
        try:
            data = json.loads((self.path.parent / self.LEGACY).read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}

    @staticmethod
    def _key(path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}"

    def get(self, path: str) -> str | None:
        key = self._key(path)
        value = self.known.get(key) if key else None
        return value if isinstance(value, str) and len(value) == 64 else None

    def set(self, path: str, digest: str) -> None:
        key = self._key(path)
        if key and self.known.get(key) != digest:
            self.known[key] = self.mine[key] = digest

    def save(self) -> None:
        """Append the entries set since the last save (one ``write`` with ``O_APPEND``: concurrent savers'
        lines never interleave), then compact when the log has doubled since its last compaction."""
        if not self.mine:
            return
        data = "".join(json.dumps([k, v]) + "\n" for k, v in self.mine.items()).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except OSError:  # the aliases are an optimisation: the files are hashed again next time
            return
        self.mine = {}
        self.reload()
        if self.lines >= self.COMPACT_AT and 2 * self.dead >= self.lines:
            self.compact()

    def compact(self) -> int:
        """Rewrite the log with the entries of files that are still there, unchanged (one ``stat`` each); under
        a lock, so one process compacts at a time (another skips, as does a disk that refuses the lock or the
        new file). Returns the entries kept."""
        from ..files import atomic_write

        try:
            with FileLock(self.path.with_name("names.lock")) as held:
                if not held:
                    return len(self.known)
                self.reload()
                live = {key: digest for key, digest in self.known.items()
                        if self._key(key.split("\0", 1)[0]) == key}  # fmt: skip
                data = (json.dumps({"tlzoo-names": 1, "live": len(live)}) + "\n"
                        + "".join(json.dumps([k, v]) + "\n" for k, v in live.items())).encode()  # fmt: skip

                def write(tmp: Path) -> None:
                    tmp.write_bytes(data)

                atomic_write(self.path, write)
                (self.path.parent / self.LEGACY).unlink(missing_ok=True)
        except OSError:  # the log stays as it was: still correct, only longer
            return len(self.known)
        self.known, self._inode, self._offset, self.lines, self.dead, self._path_key = {}, None, 0, 0, 0, {}
        self.reload()
        return len(self.known)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
