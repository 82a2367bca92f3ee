"""The decoded-pixel store: every image decoded once, kept as fixed-shape uint8 pixels in tlzoo's cache.

After FFCV's design: samples of one shape (H, W, 3) in memory-mapped files, shared through the page cache by
every process that reads them. A *bucket* holds one decode recipe and size (``$TLZOO_CACHE/store/KEY/``); in
it, immutable *segments*: a header (magic, version, shape, count, each sample's content sha256), then the
samples. An image is found by the sha256 of its bytes, computed from the same read that decodes it, so a
copy, a subset, a split or a compare combination finds the entries the full set made, and adding 10 files to
a folder decodes 10. A small alias (``names.json``) maps a file's path, size, mtime, inode and ctime to its
sha256, so a run over unchanged files reads none of them.

The store is an optimisation, and faults are handled as the feature cache's are:

- a segment is written with ordinary writes to a temporary file and published by rename, never through a
  writable mapping (a full disk on a mapped page is SIGBUS) and never truncated in place;
- its size is checked against its header before it is mapped (reading past the end of a truncated mapped
  file is SIGBUS too); a segment that fails the check is set aside and its images decoded again;
- fillers need no lock: each writes its own segment, so two processes filling at once cost some duplicate
  decoding, never a wrong or torn read;
- an unwritable cache, a full disk (checked before filling, and on write) or a store over its size cap
  (``TLZOO_STORE_MAX_GB``, default 20) leaves the caller to decode as before, with one warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .decode import available_cores, load_image, recipe
from .specs import Preprocessing

MAGIC = b"TLZSTOR1"
HEADER = 32  # magic, then int64 count, int32 H, int32 W, int32 channels, int32 reserved
DEFAULT_MAX_GB = 20.0
SEGMENT_BYTES = 256 << 20  # a fill publishes a segment every 256 MiB of samples


class StoreUnavailable(Exception):
    """The store cannot serve this request (unwritable, full, over its cap): decode without it. ``str()`` says why."""


def store_root(cache: Path) -> Path:
    return Path(cache) / "store"


def max_bytes() -> int:
    raw = os.environ.get("TLZOO_STORE_MAX_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_MAX_GB
    except ValueError:
        gb = DEFAULT_MAX_GB
    return int(gb * (1 << 30))


def bucket_key(prep: Preprocessing, size: tuple[int, int]) -> str:
    blob = json.dumps({"recipe": recipe(prep), "size": list(size)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@dataclass
class Segment:
    path: Path
    digests: list[str]
    pixels: np.ndarray  # (count, H, W, 3) uint8, a read-only memory map


def _read_segment(path: Path, size: tuple[int, int]) -> Segment | None:
    """A published segment, or None when it is damaged (wrong magic or shape, or a size that is not the one its
    header declares: mapping a truncated file would end the process with SIGBUS on the first read past it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER)
            if len(head) != HEADER or head[:8] != MAGIC:
                return None
            count = int(np.frombuffer(head, np.int64, 1, 8)[0])
            h, w, c, _ = (int(v) for v in np.frombuffer(head, np.int32, 4, 16))
            if (h, w, c) != (size[0], size[1], 3) or count < 0:
                return None
            digests = f.read(32 * count)
        expected = HEADER + 32 * count + count * h * w * c
        if len(digests) != 32 * count or os.path.getsize(path) != expected:
            return None
        pixels = np.memmap(path, np.uint8, "r", offset=HEADER + 32 * count, shape=(count, h, w, c)) if count else \
            np.zeros((0, h, w, c), np.uint8)  # fmt: skip
    except (OSError, ValueError):
        return None
    return Segment(path, [digests[i * 32 : (i + 1) * 32].hex() for i in range(count)], pixels)


class Bucket:
    """The samples of one decode recipe and size."""

    def __init__(self, cache: Path, prep: Preprocessing, size: tuple[int, int]) -> None:
        self.root = store_root(cache)
        self.path = self.root / bucket_key(prep, size)
        self.prep, self.size = prep, size
        self.segments: list[Segment] = []
        self.where: dict[str, tuple[int, int]] = {}  # sha256 -> (segment, slot)
        self.damaged: list[Path] = []
        self.refresh()

    def refresh(self) -> None:
        self.segments, self.where, self.damaged = [], {}, []
        if not self.path.is_dir():
            return
        for path in sorted(self.path.glob("seg-*.u8")):
            segment = _read_segment(path, self.size)
            if segment is None:
                self.damaged.append(path)
                continue
            index = len(self.segments)
            self.segments.append(segment)
            for slot, digest in enumerate(segment.digests):
                self.where.setdefault(digest, (index, slot))
        for path in self.damaged:  # set aside, so the images it held are decoded again (never read)
            try:
                path.unlink()
            except OSError:
                pass

    def sample_bytes(self) -> int:
        return self.size[0] * self.size[1] * 3

    def write_segment(self, digests: list[str], pixels: np.ndarray) -> None:
        """Publish ``pixels`` (n, H, W, 3) under ``digests`` as a new segment: ordinary writes to a temporary
        file, then a rename. Raises OSError (a full disk, an unwritable cache)."""
        from .rundir import fault_point, temp_prefix

        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"seg-{uuid.uuid4().hex}.u8"
        tmp = self.path / f"{temp_prefix()}{final.name}"
        head = np.zeros(HEADER, np.uint8)
        head[:8] = np.frombuffer(MAGIC, np.uint8)
        head[8:16] = np.frombuffer(np.int64(len(digests)).tobytes(), np.uint8)
        head[16:32] = np.frombuffer(np.asarray([self.size[0], self.size[1], 3, 0], np.int32).tobytes(), np.uint8)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                offset = 0
                for block in (head.tobytes(), b"".join(bytes.fromhex(d) for d in digests)):
                    offset += _pwrite_all(fd, block, offset)
                fault_point(f"write:{final.name}")
                for i in range(0, len(pixels), 64):
                    offset += _pwrite_all(fd, np.ascontiguousarray(pixels[i : i + 64]).tobytes(), offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def gather(self, keys: list[tuple[int, int]], out: np.ndarray | None = None) -> np.ndarray:
        """The samples at ``keys`` ((segment, slot) pairs) into ``out`` (made when None): one vectorised take per
        segment, in sorted slot order."""
        h, w = self.size
        out = np.empty((len(keys), h, w, 3), np.uint8) if out is None else out
        if not keys:
            return out
        pairs = np.asarray(keys, np.int64).reshape(-1, 2)
        for seg in np.unique(pairs[:, 0]):
            positions = np.flatnonzero(pairs[:, 0] == seg)
            slots = pairs[positions, 1]
            order = np.argsort(slots, kind="stable")
            out[positions[order]] = self.segments[int(seg)].pixels[slots[order]]
        return out


def _pwrite_all(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)
    return written


class StoreImages:
    """A dataset part's images as the engines index them (``[i]``, ``[a:b]``, ``[index_array]``), read from the
    store: memory holds the batches asked for, never the part. Pickled (for a spawned worker), it is the
    store's file paths and its slots, and reopens the files by path."""

    def __init__(self, paths: list[str], keys: np.ndarray, size: tuple[int, int]) -> None:
        self._paths, self._keys, self._size = paths, np.asarray(keys, np.int64).reshape(-1, 2), size
        self._maps: list[np.ndarray] | None = None

    def _segments(self) -> list[np.ndarray]:
        if self._maps is None:
            maps = []
            for path in self._paths:
                segment = _read_segment(Path(path), self._size)
                if segment is None:
                    raise OSError(f"the decoded-pixel store file {path} changed while in use")
                maps.append(segment.pixels)
            self._maps = maps
        return self._maps

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self._keys), self._size[0], self._size[1], 3)

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, index: Any) -> np.ndarray | StoreImages:
        if isinstance(index, (int, np.integer)):
            seg, slot = self._keys[int(index)]
            return np.array(self._segments()[seg][slot])  # a writable copy, as torch.from_numpy wants
        return self._rows(index)

    def _rows(self, index: Any) -> np.ndarray:
        rows = self._keys[index]
        maps = self._segments()
        out = np.empty((len(rows), self._size[0], self._size[1], 3), np.uint8)
        for seg in np.unique(rows[:, 0]) if len(rows) else []:
            positions = np.flatnonzero(rows[:, 0] == seg)
            slots = rows[positions, 1]
            order = np.argsort(slots, kind="stable")
            out[positions[order]] = maps[int(seg)][slots[order]]
        return out

    def subset(self, index: np.ndarray) -> StoreImages:
        return StoreImages(self._paths, self._keys[index], self._size)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self._rows(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoreImages, (self._paths, self._keys, self._size))


@dataclass
class Filled:
    """What :func:`images` did: the part's images, the positions that could not be read, and the decodes it ran."""

    images: StoreImages
    kept: np.ndarray
    skipped: list[tuple[str, str]]
    decoded: int


def images(cache: Path, files: list[str], size: tuple[int, int], prep: Preprocessing, *, threads: int | None = None,
           strict: bool = False, progress: Callable[[int], None] | None = None) -> Filled:  # fmt: skip
    """``files`` decoded at ``size`` by ``prep``, from the store: the ones it lacks are read once (their sha256 and
    their pixels from the same bytes), decoded on a pool of threads and published as one new segment.

    Raises :class:`StoreUnavailable` (the caller decodes without the store) when the cache cannot be written,
    the disk has no room for the new samples, or the store would grow past its cap."""
    from .errors import DataError

    bucket = Bucket(cache, prep, size)
    names = _Names(store_root(cache))
    digests = [names.get(p) for p in files]
    unknown = [i for i, d in enumerate(digests) if d is None or d not in bucket.where]
    skipped: dict[int, str] = {}
    if unknown:
        need = len(unknown) * bucket.sample_bytes()
        _check_room(bucket, need)
        new_digests: list[str] = []
        new_pixels: list[np.ndarray] = []
        chunk = max(1, SEGMENT_BYTES // bucket.sample_bytes())  # memory holds one segment's worth, not the dataset

        def flush() -> None:
            if new_digests:
                try:
                    bucket.write_segment(new_digests, np.stack(new_pixels))
                except OSError as exc:
                    raise StoreUnavailable(_fault_text(exc, bucket.root, need)) from None
                new_digests.clear()
                new_pixels.clear()

        with ThreadPoolExecutor(threads or available_cores(), thread_name_prefix="tlzoo-store") as pool:
            for i, result in zip(unknown, _ahead(pool, lambda i: _read_and_decode(files[i], size, prep), unknown)):
                digest, pixels, why = result
                if why is not None:
                    if strict:
                        raise DataError(f"cannot read image {files[i]}: {why}")
                    skipped[i] = why
                elif pixels is not None:
                    digests[i] = digest
                    names.set(files[i], digest)
                    if digest not in bucket.where and digest not in new_digests:
                        new_digests.append(digest)
                        new_pixels.append(pixels)
                        if len(new_digests) >= chunk:
                            flush()
                            bucket.refresh()
                if progress is not None:
                    progress(1)
        flush()
        bucket.refresh()
        names.save()
    elif progress is not None:
        progress(len(files))
    kept = np.asarray([i for i in range(len(files)) if i not in skipped], np.int64)
    keys = np.asarray([bucket.where[digests[i]] for i in kept], np.int64).reshape(-1, 2)  # type: ignore[index]
    used = sorted(set(keys[:, 0].tolist()))
    remap = {old: new for new, old in enumerate(used)}
    keys = np.asarray([[remap[int(s)], int(t)] for s, t in keys], np.int64).reshape(-1, 2)
    paths = [str(bucket.segments[i].path) for i in used]
    return Filled(StoreImages(paths, keys, size), kept, [(files[i], skipped[i]) for i in sorted(skipped)], len(unknown))


def _ahead(pool: ThreadPoolExecutor, work: Callable[[int], Any], items: list[int], depth: int = 256) -> Any:
    """``pool.map(work, items)`` in order, keeping at most ``depth`` results ahead of the consumer (``map`` would
    submit every item at once and hold what is done before it is consumed)."""
    from collections import deque

    pending: deque[Any] = deque()
    position = 0
    while position < len(items) or pending:
        while position < len(items) and len(pending) < depth:
            pending.append(pool.submit(work, items[position]))
            position += 1
        yield pending.popleft().result()


def _read_and_decode(path: str, size: tuple[int, int], prep: Preprocessing) -> tuple[str, np.ndarray | None, str | None]:
    try:
        with open(path, "rb") as f:
            data = f.read()
        pixels = load_image(io.BytesIO(data), size, prep, name=path)
    except Exception as exc:  # PIL raises many types for truncated or non-image files
        return "", None, f"{type(exc).__name__}: {exc}"
    return hashlib.sha256(data).hexdigest(), pixels, None


def _check_room(bucket: Bucket, need: int) -> None:
    root = bucket.root
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise StoreUnavailable(f"the decoded-pixel store {root} is not writable")
    free = shutil.disk_usage(probe).free
    if free < need + (256 << 20):
        raise StoreUnavailable(f"the disk holding {root} has {free / 2**30:.1f} GiB free and the store needs "
                               f"{need / 2**30:.2f} GiB more")  # fmt: skip
    used = sum(p.stat().st_size for p in root.glob("*/seg-*.u8")) if root.is_dir() else 0
    cap = max_bytes()
    if used + need > cap:
        raise StoreUnavailable(f"the decoded-pixel store {root} would grow to {(used + need) / 2**30:.2f} GiB, over "
                               f"its cap of {cap / 2**30:.1f} GiB (TLZOO_STORE_MAX_GB raises it; tlzoo cache clear "
                               f"store empties it)")  # fmt: skip


def _fault_text(exc: OSError, root: Path, need: int) -> str:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding {root} is full ({need / 2**20:.0f} MiB were needed)"
    return f"the decoded-pixel store {root} could not be written ({exc.strerror or exc})"


class _Names:
    """path, size, mtime, inode, ctime -> the file's sha256, remembered so that unchanged files are not read."""

    def __init__(self, root: Path) -> None:
        self.path = root / "names.json"
        try:
            data = json.loads(self.path.read_text())
            self.known: dict[str, str] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

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
        if key:
            self.known[key] = digest
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        from .rundir import atomic_write_json

        try:
            atomic_write_json(self.path, self.known)
        except OSError:  # the aliases are an optimisation too: the files are hashed again next time
            pass
