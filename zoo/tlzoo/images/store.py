"""The decoded-pixel store: every image decoded once, kept as fixed-shape uint8 pixels in tlzoo's cache.

After FFCV's design: samples of one shape (H, W, 3) in memory-mapped files, shared through the page cache by
every process that reads them. A *bucket* holds one decode recipe and size (``$TLZOO_CACHE/store/KEY/``); in
it, immutable *segments*: a header (magic, version, shape, count, each sample's content sha256), then the
samples. An image is found by the sha256 of its bytes, computed from the same read that decodes it, so a
copy, a subset, a split or a compare combination finds the entries the full set made, and adding 10 files to
a folder decodes 10. An alias log (``names.log``, append-only, compacted rarely) maps a file's path, size, mtime,
inode and ctime to its sha256, so a run over unchanged files reads none of them. Filling costs the same per
image at any size: a published segment's table is read once, the aliases are appended, not rewritten.

The store is an optimisation, and faults are handled as the feature cache's are:

- a segment is written with ordinary writes to a temporary file and published by rename, never through a
  writable mapping (a full disk on a mapped page is SIGBUS) and never truncated in place;
- its size is checked against its header before it is mapped (reading past the end of a truncated mapped
  file is SIGBUS too); a segment that fails the check is set aside and its images decoded again;
- fillers coordinate through lock files (:class:`tlzoo.images.locks.FileLock`: ``O_EXCL``, broken when its holder
  died): the files to decode are cut into one shard per process of the node (torchrun's ``LOCAL_WORLD_SIZE``;
  one shard otherwise); each process fills its own shard, then waits for, or takes over, the others', so no
  image is decoded twice and nobody waits on one rank alone. A second run started during a fill waits for
  the first's segments rather than decoding the same files again;
- an unwritable cache, a full disk (checked before filling, and on write) or a store over its size cap
  (``TLZOO_STORE_MAX_GB``, default 20) leaves the caller to decode as before, with one warning. Before
  giving up on the cap, the least recently used buckets are evicted, never one a live process is using
  (:class:`tlzoo.images.locks.Lease`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..files import hash_file, human_bytes, reclaim_temp_files
from ..limits import STORE_MAX_GB, store_cap_bytes
from ..specs import Preprocessing
from .batches import ahead
from .decode import ImageDecoder, Jpeg, available_cores, decode_jpegs, gpu_decodable, load_image, recipe
from .aliases import Names
from .locks import FileLock, in_use, lease

MAGIC = b"TLZSTOR2"
HEADER = 32  # magic, then int64 count, int32 H, int32 W, int32 channels, int32 reserved; the samples; their sha256s
SEGMENT_BYTES = 256 << 20  # a fill publishes a segment every 256 MiB of samples
LAST_USED = "last-used"  # touched by every run that reads a bucket: eviction removes the oldest first
GPU_BATCH = 64  # JPEGs a GPU decoder takes at once while filling the store
KEEP_FREE = 256 << 20  # bytes the store leaves free on its disk
WAIT_POLL = 0.25  # seconds between tries of the lock of a shard another process is filling
WATCH_EVERY = 0.02  # seconds between looks (two stat calls) at whether that process published anything


class StoreUnavailable(Exception):
    """The store cannot serve this request (unwritable, full, over its cap): decode without it. ``str()`` says why."""


def store_root(cache: Path) -> Path:
    return Path(cache) / "store"


def disabled() -> str | None:
    """Why the store is not used at all (``TLZOO_STORE_MAX_GB=0``), else None."""
    return f"{STORE_MAX_GB}=0 turns the decoded-pixel store off" if store_cap_bytes() == 0 else None


def bucket_key(prep: Preprocessing, size: tuple[int, int], decoder: str | None = None) -> str:
    blob = json.dumps({"recipe": recipe(prep, decoder), "size": list(size)}, sort_keys=True).encode()
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
            expected = HEADER + count * h * w * c + 32 * count
            if os.fstat(f.fileno()).st_size != expected:
                return None
            f.seek(HEADER + count * h * w * c)
            digests = f.read(32 * count)
        pixels = np.memmap(path, np.uint8, "r", offset=HEADER, shape=(count, h, w, c)) if count else \
            np.zeros((0, h, w, c), np.uint8)  # fmt: skip
    except (OSError, ValueError):
        return None
    return Segment(path, [digests[i * 32 : (i + 1) * 32].hex() for i in range(count)], pixels)


class SegmentFile:
    """One segment being written: each sample at its final offset as it comes (ordinary writes, so memory holds
    none of them), then the digests and the header, ``fsync``, and the rename that publishes it. Raises OSError
    (a full disk, an unwritable cache); :meth:`abort` removes the partial file."""

    def __init__(self, folder: Path, size: tuple[int, int]) -> None:
        from ..files import temp_prefix

        folder.mkdir(parents=True, exist_ok=True)
        self.final = folder / f"seg-{uuid.uuid4().hex}.u8"
        self.tmp = folder / f"{temp_prefix()}{self.final.name}"
        self.size, self.sample = size, size[0] * size[1] * 3
        self.digests: list[str] = []
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def add(self, digest: str, pixels: np.ndarray) -> None:
        from ..files import fault_point

        if not self.digests:
            fault_point(f"write:{self.final.name}")
        _pwrite_all(self.fd, np.ascontiguousarray(pixels, np.uint8).tobytes(), HEADER + len(self.digests) * self.sample)
        self.digests.append(digest)

    def publish(self) -> Path:
        count = len(self.digests)
        head = np.zeros(HEADER, np.uint8)
        head[:8] = np.frombuffer(MAGIC, np.uint8)
        head[8:16] = np.frombuffer(np.int64(count).tobytes(), np.uint8)
        head[16:32] = np.frombuffer(np.asarray([self.size[0], self.size[1], 3, 0], np.int32).tobytes(), np.uint8)
        _pwrite_all(self.fd, b"".join(bytes.fromhex(d) for d in self.digests), HEADER + count * self.sample)
        _pwrite_all(self.fd, head.tobytes(), 0)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


class Bucket:
    """The samples of one decode recipe and size (``decoder``: the JPEGs are that :class:`ImageDecoder`'s)."""

    def __init__(self, cache: Path, prep: Preprocessing, size: tuple[int, int],
                 decoder: ImageDecoder | None = None) -> None:  # fmt: skip
        self.root = store_root(cache)
        self.path = self.root / bucket_key(prep, size, decoder.name if decoder is not None else None)
        self.prep, self.size, self.decoder = prep, size, decoder
        self.segments: list[Segment] = []
        self.where: dict[str, tuple[int, int]] = {}  # sha256 -> (segment, slot)
        self.damaged: list[Path] = []
        self.use()
        self.refresh()

    def use(self) -> None:
        """Mark the bucket in use by this process (eviction and ``tlzoo cache clear`` pass it over) and recently
        used (LRU order). Quietly nothing on a read-only cache."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / LAST_USED).touch()
        except OSError:
            return
        lease(self.path)
        reclaim_temp_files(self.path)  # half-written segments of fillers that were killed

    def refresh(self) -> None:
        """Take in the segments published since the last look (reading only their tables); start over when one
        this process knew is gone (eviction, ``tlzoo cache clear``)."""
        present = sorted(self.path.glob("seg-*.u8")) if self.path.is_dir() else []
        known = {segment.path for segment in self.segments}
        if not known <= set(present):
            # Swapped whole (a thread reading ``where`` meanwhile sees the old state or the new one, never half).
            self.segments, self.where = [], {}
            known = set()
        self.damaged = []
        for path in present:
            if path not in known:
                self.add_segment(path)
        for path in self.damaged:  # set aside, so the images it held are decoded again (never read)
            try:
                path.unlink()
            except OSError:
                pass

    def add_segment(self, path: Path) -> None:
        """One published segment's table read and its samples made findable (appended: a thread reading
        ``where`` meanwhile finds each digest before or after, never a half-made entry)."""
        segment = _read_segment(path, self.size)
        if segment is None:
            self.damaged.append(path)
            return
        index = len(self.segments)
        self.segments.append(segment)
        for slot, digest in enumerate(segment.digests):
            self.where.setdefault(digest, (index, slot))

    def sample_bytes(self) -> int:
        return self.size[0] * self.size[1] * 3


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

    @property
    def nbytes(self) -> int:
        return len(self._keys) * self._size[0] * self._size[1] * 3

    def physical_order(self) -> np.ndarray:
        """The positions in the order their pixels lie in the store's files (segment, then slot)."""
        return np.lexsort((self._keys[:, 1], self._keys[:, 0]))

    def __getitem__(self, index: Any) -> np.ndarray | StoreImages:
        if isinstance(index, (int, np.integer)):
            seg, slot = self._keys[int(index)]
            return np.array(self._segments()[seg][slot])  # a writable copy, as torch.from_numpy wants
        return self._rows(index)

    def _rows(self, index: Any) -> np.ndarray:
        positions = np.arange(len(self))[index]
        return self.gather(positions, out=np.empty((len(positions), *self.shape[1:]), np.uint8))

    def read_order(self, indices: np.ndarray) -> np.ndarray:
        """The permutation that puts ``indices`` in the store's file order (segment, then slot): gathered so,
        each segment's images are one take into one contiguous run of the output."""
        rows = self._keys[np.asarray(indices, np.int64)]
        return np.lexsort((rows[:, 1], rows[:, 0]))

    def gather(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The images at ``indices``, in that order, into ``out`` (made when None): one copy from the mapped
        files, by one vectorised take per run of consecutive indices in the same segment (a store of one
        segment: one take for the batch)."""
        rows = self._keys[np.asarray(indices, np.int64)]
        maps = self._segments()
        out = np.empty((len(rows), self._size[0], self._size[1], 3), np.uint8) if out is None else out
        bounds = np.flatnonzero(np.diff(rows[:, 0])) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(rows)]) if len(rows) else ():
            segment = maps[int(rows[lo, 0])]
            np.take(segment, rows[lo:hi, 1], axis=0, out=out[lo:hi], mode="clip")  # slots come from the table
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
    digests: list[str] = field(default_factory=list)  # the sha256 of each kept file's bytes, in order


class Writer:
    """New samples written into segments of at most :data:`SEGMENT_BYTES` as they come (memory holds none of
    them), each published as soon as it is full, with their files' aliases."""

    def __init__(self, bucket: Bucket, names: Names, need: int, *, refresh: bool = True) -> None:
        self.bucket, self.names, self.need, self.refresh = bucket, names, need, refresh
        self.chunk = max(1, SEGMENT_BYTES // bucket.sample_bytes())
        self.file: SegmentFile | None = None
        self.pending: set[str] = set()

    def add(self, path: str, digest: str, pixels: np.ndarray | None) -> None:
        """``path``'s content is ``digest``; ``pixels`` are its samples (None: the store has them already).
        Raises :class:`StoreUnavailable` when they cannot be written."""
        self.names.set(path, digest)
        if pixels is None or digest in self.bucket.where or digest in self.pending:
            return
        try:
            if self.file is None:
                self.file = SegmentFile(self.bucket.path, self.bucket.size)
            self.file.add(digest, pixels)
        except OSError as exc:
            self.abort()
            raise StoreUnavailable(_fault_text(exc, self.bucket.root, self.need)) from None
        self.pending.add(digest)
        if len(self.file.digests) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Publish what is written. Raises :class:`StoreUnavailable` when it cannot be."""
        if self.file is not None:
            try:
                published = self.file.publish()
            except OSError as exc:
                self.abort()
                raise StoreUnavailable(_fault_text(exc, self.bucket.root, self.need)) from None
            self.file = None
            self.pending.clear()
            if self.refresh:
                self.bucket.add_segment(published)  # its table alone: the others are known
        self.names.save()  # after the segment: a waiting filler that finds the alias finds the pixels too

    def abort(self) -> None:
        """Remove the segment being written (an error, an interrupt): nothing partial is left."""
        if self.file is not None:
            self.file.abort()
            self.file = None
        self.pending.clear()


class Stream:
    """Feature extraction's reads, from threads: a file's pixels from the store when it holds them, else decoded
    and added to it (within its cap: :meth:`start` says when it cannot be). Unlike :func:`images`, it takes no
    lock: it reads each file as its batch comes, and two runs filling at once only publish a duplicate sample."""

    def __init__(self, cache: Path, size: tuple[int, int], prep: Preprocessing,
                 decoder: ImageDecoder | None = None) -> None:  # fmt: skip
        self.bucket = Bucket(cache, prep, size, decoder)
        self.names = Names(store_root(cache))
        self.writer: Writer | None = None
        self.decoded = 0
        self.why_not: str | None = None
        self._guard = threading.Lock()

    def start(self, n: int) -> str | None:
        """Make room for at most ``n`` new samples; the reason when the store will not be filled."""
        need = n * self.bucket.sample_bytes()
        why = disabled()
        if why:
            return why
        try:
            _check_room(self.bucket, need)
        except StoreUnavailable as exc:
            return str(exc)
        self.writer = Writer(self.bucket, self.names, need, refresh=False)
        return None

    def load(self, path: str) -> np.ndarray | Jpeg:
        """``path``'s pixels, or (a JPEG the bucket's decoder takes) its :class:`Jpeg` to decode in a batch and
        hand to :meth:`add`."""
        digest = self.names.get(path)
        where = self.bucket.where.get(digest) if digest else None
        if where is None:
            digest, pixels = _read_new(path, self.bucket)
            if isinstance(pixels, Jpeg):
                return pixels
            if pixels is not None:
                self.add(path, digest, pixels)
                return pixels
            with self._guard:
                self.names.set(path, digest)
            where = self.bucket.where[digest]  # _read_new decodes nothing only for content the bucket holds
        segment, slot = where
        return np.array(self.bucket.segments[segment].pixels[slot])

    def add(self, path: str, digest: str, pixels: np.ndarray) -> None:
        """A file decoded here (``digest``: its content's sha256), for the store to hold."""
        with self._guard:
            self.decoded += 1
            if self.writer is not None:
                try:
                    self.writer.add(path, digest, pixels)
                except StoreUnavailable as exc:  # the image is fine: only the store stops filling
                    self.writer, self.why_not = None, str(exc)

    def close(self) -> str | None:
        """Publish what is left; the reason when the store could not be filled."""
        with self._guard:
            try:
                if self.writer is not None:
                    self.writer.flush()
                else:
                    self.names.save()
            except StoreUnavailable as exc:
                self.why_not = str(exc)
            self.writer = None
        return self.why_not

    def abort(self) -> None:
        with self._guard:
            if self.writer is not None:
                self.writer.abort()
            self.writer = None


def images(cache: Path, files: list[str], size: tuple[int, int], prep: Preprocessing, *, threads: int | None = None,
           strict: bool = False, progress: Callable[[int], None] | None = None, decoder: ImageDecoder | None = None,
           say: Callable[[str], None] | None = None) -> Filled:  # fmt: skip
    """``files`` decoded at ``size`` by ``prep``, from the store: the ones it lacks are read once (their sha256 and
    their pixels from the same bytes), decoded on a pool of threads (the JPEGs ``decoder`` takes: by it, a
    batch at a time) and published in new segments. A file whose content the store holds under another name
    is read and hashed, not decoded.

    Under torchrun, the node's processes fill disjoint shards (see the module's docstring).

    Raises :class:`StoreUnavailable` (the caller decodes without the store) when the cache cannot be written,
    the disk has no room for the new samples, or the store would grow past its cap. ``say`` is told, once, when
    this call waits for another process filling the same images."""
    from ..distributed import world

    why = disabled()
    if why:
        raise StoreUnavailable(why)
    bucket = Bucket(cache, prep, size, decoder)
    names = Names(store_root(cache))
    digests: list[str | None] = [names.get(p) for p in files]

    def missing(i: int) -> bool:
        return digests[i] is None or digests[i] not in bucket.where

    unknown = [i for i in range(len(files)) if missing(i)]
    skipped: dict[int, str] = {}
    decoded = [0]
    told = [0]

    def tell(n: int) -> None:
        if progress is not None and n:
            progress(n)
        told[0] += n

    if unknown:
        need = len(unknown) * bucket.sample_bytes()
        _check_room(bucket, need)
        writer = Writer(bucket, names, need)
        job = world()
        shards, mine = max(1, job.local_size), job.local_rank % max(1, job.local_size)
        told_wait = False
        with ThreadPoolExecutor(threads or available_cores(), thread_name_prefix="tlzoo-store") as pool:
            for shard in [(mine + k) % shards for k in range(shards)]:
                lock = FileLock(bucket.path / f"fill-{shard}-of-{shards}.lock")

                def todo() -> list[int]:
                    return [i for i in unknown if i % shards == shard and i not in skipped and missing(i)]

                def catch_up() -> None:  # what other processes have published meanwhile
                    names.reload()
                    bucket.refresh()
                    for i in todo():
                        digests[i] = digests[i] or names.get(files[i])

                while todo():
                    try:
                        acquired = lock.acquire()
                    except OSError as exc:  # a lock that cannot be written: the disk or the folder refuses
                        raise StoreUnavailable(_fault_text(exc, bucket.root, need)) from None
                    if acquired:
                        try:
                            catch_up()  # the holder before may have published this shard just now
                            if todo():
                                _fill(pool, files, todo(), digests, bucket, writer, lock, skipped, decoded, strict, tell)
                        finally:
                            lock.release()
                        break
                    # Another process fills this shard: take what it publishes, and the shard if it stops.
                    if say is not None and not told_wait:
                        told_wait = True
                        say(f"waiting for {lock.holder()}, which is decoding these images into the store "
                            f"({bucket.path}); this run takes over if it stops")  # fmt: skip
                    if _published_within(bucket.path, names.path, WAIT_POLL):
                        catch_up()  # only when the filler published: nothing is re-read while nothing changed
        names.save()
    tell(len(files) - told[0])
    kept = np.asarray([i for i in range(len(files)) if i not in skipped], np.int64)
    keys = np.asarray([bucket.where[digests[i]] for i in kept], np.int64).reshape(-1, 2)  # type: ignore[index]
    used = sorted(set(keys[:, 0].tolist()))
    remap = {old: new for new, old in enumerate(used)}
    keys = np.asarray([[remap[int(s)], int(t)] for s, t in keys], np.int64).reshape(-1, 2)
    paths = [str(bucket.segments[i].path) for i in used]
    return Filled(StoreImages(paths, keys, size), kept, [(files[i], skipped[i]) for i in sorted(skipped)], decoded[0],
                  [str(digests[i]) for i in kept])  # fmt: skip


def _mark(*paths: Path) -> tuple[tuple[int, int, int] | None, ...]:
    marks: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
            marks.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            marks.append(None)
    return tuple(marks)


def _published_within(bucket: Path, log: Path, seconds: float) -> bool:
    """Whether a filler published within ``seconds`` (a segment renamed into the bucket's folder changes its
    mtime; aliases appended to the log its size), returning as soon as it did: a waiting run is woken by the
    filler's progress, and looks by two stat calls, never by reading what did not change."""
    before = _mark(bucket, log)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(WATCH_EVERY)
        if _mark(bucket, log) != before:
            return True
    return False


def content_digests(cache: Path, paths: list[str]) -> list[str]:
    """The sha256 of each file's bytes: the store's names map says it without reading a file unchanged since it
    was hashed (same path, size, times and inode); any other file is read."""
    names = Names(store_root(cache))
    return [names.get(p) or hash_file(p) for p in paths]


def _fill(pool: ThreadPoolExecutor, files: list[str], todo: list[int], digests: list[str | None], bucket: Bucket,
          writer: Writer, lock: FileLock, skipped: dict[int, str], decoded: list[int], strict: bool,
          tell: Callable[[int], None]) -> None:  # fmt: skip
    """Read, hash and (when the store lacks the content) decode ``todo``, publishing a segment per chunk. JPEGs
    the bucket's decoder takes wait for a batch of :data:`GPU_BATCH` and are decoded together."""
    from ..errors import DataError, UsageError

    def work(i: int) -> tuple[str, np.ndarray | Jpeg | None, str | None]:
        try:
            return (*_read_new(files[i], bucket), None)
        except UsageError:  # a setting the user must fix, not this file's fault
            raise
        except Exception as exc:  # PIL raises many types for truncated or non-image files
            return "", None, f"{type(exc).__name__}: {exc}"

    def done(i: int, digest: str, pixels: np.ndarray | None, why: str | None) -> None:
        lock.beat()
        if why is not None:
            if strict:
                raise DataError(f"cannot read image {files[i]}: {why}")
            skipped[i] = why
        else:
            digests[i] = digest
            decoded[0] += pixels is not None
            writer.add(files[i], digest, pixels)
        tell(1)

    waiting: list[tuple[int, Jpeg]] = []

    def decode_waiting() -> None:
        assert bucket.decoder is not None
        got = decode_jpegs([(files[i], jpeg) for i, jpeg in waiting], bucket.decoder, bucket.size, bucket.prep)
        for (i, jpeg), pixels in zip(waiting, got):
            if isinstance(pixels, Exception):
                done(i, "", None, f"{type(pixels).__name__}: {pixels}")
            else:
                done(i, jpeg.digest, pixels, None)
        waiting.clear()

    try:
        for i, (digest, pixels, why) in zip(todo, ahead(pool, work, todo)):
            if isinstance(pixels, Jpeg):
                waiting.append((i, pixels))
                if len(waiting) >= GPU_BATCH:
                    decode_waiting()
            else:
                done(i, digest, pixels, why)
        if waiting:
            decode_waiting()
        writer.flush()
    except BaseException:  # --strict, an interrupt: no partial segment is left behind
        writer.abort()
        raise


def _read(path: str) -> tuple[bytes, str]:
    """A file's bytes and their sha256: the one read that both the key and the pixels come from."""
    with open(path, "rb") as f:
        data = f.read()
    return data, hashlib.sha256(data).hexdigest()


def _decode(data: bytes, path: str, size: tuple[int, int], prep: Preprocessing) -> np.ndarray:
    return load_image(io.BytesIO(data), size, prep, name=path)


def _read_new(path: str, bucket: Bucket) -> tuple[str, np.ndarray | Jpeg | None]:
    """``path``'s sha256, and its pixels decoded from the same read when ``bucket`` lacks that content (None
    when it holds it already; its :class:`Jpeg` when the bucket's decoder takes it)."""
    data, digest = _read(path)
    if digest in bucket.where:
        return digest, None
    jpeg = gpu_decodable(data, bucket.size) if bucket.decoder is not None else None
    return digest, replace(jpeg, digest=digest) if jpeg is not None else _decode(data, path, bucket.size, bucket.prep)


def _check_room(bucket: Bucket, need: int) -> None:
    root = bucket.root
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():  # TLZOO_CACHE, or the store's folder in it, names a file
        raise StoreUnavailable(f"{probe} is a file, not a folder: the decoded-pixel store {root} cannot be made "
                               f"(TLZOO_CACHE moves the cache)")  # fmt: skip
    if not os.access(probe, os.W_OK) or (bucket.path.is_dir() and not os.access(bucket.path, os.W_OK)):
        raise StoreUnavailable(f"the decoded-pixel store {root} is not writable")
    free = shutil.disk_usage(probe).free
    if free < need + KEEP_FREE:
        raise StoreUnavailable(f"the disk holding {root} has {human_bytes(free)} free; these images need {human_bytes(need)} "
                               f"in the decoded-pixel store, and it leaves {human_bytes(KEEP_FREE)} free for everything "
                               f"else")  # fmt: skip
    cap = store_cap_bytes()
    if cap is None:
        return
    used = evict(root, cap - need, keep=bucket.path)
    if used + need > cap:
        raise StoreUnavailable(f"the decoded-pixel store {root} would grow to {human_bytes(used + need)}, over "
                               f"its cap of {human_bytes(cap)} (TLZOO_STORE_MAX_GB raises it; tlzoo cache clear "
                               f"store empties it)")  # fmt: skip


def _bucket_bytes(path: Path) -> int:
    total = 0
    for f in path.glob("seg-*.u8"):
        try:
            total += f.stat().st_size
        except OSError:
            pass
    return total


def _last_used(path: Path) -> float:
    try:
        return (path / LAST_USED).stat().st_mtime
    except OSError:
        return path.stat().st_mtime if path.exists() else 0.0


def buckets(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def remove_bucket(path: Path) -> bool:
    """Remove one bucket: moved aside by one rename (a reader never sees it half gone), then deleted. False when
    it could not be moved (Windows cannot rename or delete a file another process has mapped)."""
    aside = path.parent / f".removed-{uuid.uuid4().hex}"
    try:
        os.rename(path, aside)
    except OSError:
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


def evict(root: Path, budget: int, *, keep: Path | None = None) -> int:
    """Remove the least recently used buckets until the store holds at most ``budget`` bytes, never ``keep`` nor
    a bucket a live process uses. Returns the bytes the store holds afterwards."""
    sizes = {path: _bucket_bytes(path) for path in buckets(root)}
    used = sum(sizes.values())
    for path in sorted(sizes, key=_last_used):
        if used <= budget:
            break
        if path == keep or in_use(path):
            continue
        if remove_bucket(path):
            used -= sizes[path]
    return used


def clear(root: Path) -> tuple[int, int]:
    """Remove every bucket no live process uses (``tlzoo cache clear store``): (bytes freed, buckets kept)."""
    freed = kept = 0
    for path in buckets(root):
        size = _bucket_bytes(path)
        if not in_use(path) and remove_bucket(path):
            freed += size
        else:
            kept += 1
    if not kept and root.is_dir():
        shutil.rmtree(root, ignore_errors=True)
    return freed, kept


def _fault_text(exc: OSError, root: Path, need: int) -> str:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding {root} is full ({need / 2**20:.0f} MiB were needed)"
    return f"the decoded-pixel store {root} could not be written ({exc.strerror or exc})"
