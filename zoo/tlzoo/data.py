"""Labelled image datasets: ImageFolder or CSV layout, decoding, splits, fingerprints.

A dataset is first a list of labelled files (:class:`ImageList`): splits are planned on it without
decoding anything. Feature extraction streams it through :func:`decode_batches` (a pool of decoding
threads a few batches ahead of the backbone), so a dataset larger than memory works; the strategies that
train the backbone go over the images every epoch and hold them decoded (:class:`ImageSet`, one uint8
array at the input size).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from .decode import ImageDecoder, Jpeg, available_cores, decode_jpegs, is_image_file, load_image, read_for
from .errors import DataError
from .specs import Preprocessing

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Sample:
    path: Path
    label: str


@dataclass
class ImageSet:
    """Decoded images (N, H, W, 3) uint8, their integer labels and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageSet:
        # Images read from the decoded-pixel store (tlzoo.store.StoreImages) subset without copying any pixels.
        images = self.images.subset(index) if hasattr(self.images, "subset") else self.images[index]
        return ImageSet(images, self.labels[index], [self.paths[i] for i in index], self.classes)

    def counts(self) -> dict[str, int]:
        c = Counter(int(x) for x in self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}


@dataclass
class ImageList:
    """Labelled image files, not decoded: what a split is planned on and feature extraction streams."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageList:
        return ImageList([self.paths[i] for i in index], self.labels[index], self.classes)

    def counts(self) -> dict[str, int]:
        c = Counter(int(x) for x in self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def stats(self) -> list[tuple[str, int, int, int, int]]:
        """(absolute path, size, mtime, inode, ctime) of every file: what says, without reading them, that they
        are the files a cache entry was made from. ``cp -p`` and ``rsync -a`` keep a replaced file's size and
        mtime, but cannot set its ctime (nor keep its inode)."""
        out = []
        for path in self.paths:
            st = os.stat(path)
            out.append((os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        return out

    def digests(self) -> list[str]:
        """sha256 of every file's bytes, in order."""
        return [hash_file(p) for p in self.paths]


def hash_file(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read a megabyte at a time."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def labelled(samples: list[Sample], classes: list[str] | None = None) -> ImageList:
    """The samples as an :class:`ImageList` with integer labels over ``classes`` (default: the samples' own)."""
    classes = classes or sorted({s.label for s in samples})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DataError(f"labels not seen in training: {', '.join(unknown)} (known: {', '.join(classes)})")
    return ImageList([str(s.path) for s in samples], np.asarray([index[s.label] for s in samples], np.int64), classes)


@dataclass
class DecodedBatch:
    """One batch of :func:`decode_batches`: the readable images, their positions in the list, the others."""

    index: np.ndarray
    images: np.ndarray
    skipped: list[tuple[str, str]]


def default_threads() -> int:
    """One decoding thread per core this process may use (Pillow releases the GIL while it decodes)."""
    return available_cores()


def decode_batches(paths: list[str], size: tuple[int, int], *, batch_size: int, threads: int | None = None,
                   strict: bool = False, prep: Preprocessing | None = None,
                   load: Callable[[str], np.ndarray | Jpeg] | None = None, decoder: ImageDecoder | None = None,
                   decoded: Callable[[str, Jpeg, np.ndarray], None] | None = None) -> Iterator[DecodedBatch]:  # fmt: skip
    """Decode ``paths`` in order (by ``prep``'s resize policy, see :func:`tlzoo.decode.load_image`),
    ``batch_size`` at a time, on a pool of threads that works at most three batches ahead of the consumer:
    memory holds a few batches, never the dataset. Unreadable files (and images over the pixel limit) are
    reported in their batch's ``skipped`` (``strict``: raise :class:`DataError` instead).

    ``decoder`` (a GPU's) takes the batch's JPEGs, the threads reading them; Pillow the rest. ``load(path)``,
    when given, replaces the threads' read (the decoded-pixel store's :class:`tlzoo.store.Stream`): it gives
    pixels, or a :class:`Jpeg` for ``decoder``, whose pixels then go to ``decoded(path, jpeg, pixels)``."""
    ahead = 3 * batch_size
    read = load or (read_for(decoder, size, prep) if decoder is not None else lambda path: load_image(path, size, prep))
    with ThreadPoolExecutor(threads or default_threads(), thread_name_prefix="tlzoo-decode") as pool:
        pending: deque[Future[np.ndarray | Jpeg]] = deque()
        submitted = 0
        for start in range(0, len(paths), batch_size):
            stop = min(start + batch_size, len(paths))
            while submitted < min(len(paths), stop + ahead):
                pending.append(pool.submit(read, paths[submitted]))
                submitted += 1
            got: dict[int, np.ndarray | Jpeg | Exception] = {}
            for i in range(start, stop):
                try:
                    got[i] = pending.popleft().result()
                except Exception as exc:  # PIL raises many types for truncated or non-image files
                    got[i] = exc
            jpegs = [i for i, item in got.items() if isinstance(item, Jpeg)]
            if jpegs:
                assert decoder is not None, "a Jpeg is only read for a decoder"
                out = decode_jpegs([(paths[i], got[i]) for i in jpegs], decoder, size, prep)  # type: ignore[misc]
                for i, pixels in zip(jpegs, out):
                    if decoded is not None and not isinstance(pixels, Exception):
                        decoded(paths[i], got[i], pixels)  # type: ignore[arg-type]
                    got[i] = pixels
            index: list[int] = []
            images: list[np.ndarray] = []
            skipped: list[tuple[str, str]] = []
            for i in range(start, stop):
                item = got[i]
                assert not isinstance(item, Jpeg)
                if isinstance(item, Exception):
                    if strict:
                        for future in pending:
                            future.cancel()
                        raise DataError(f"cannot read image {paths[i]}: {type(item).__name__}: {item}") from item
                    skipped.append((str(paths[i]), f"{type(item).__name__}: {item}"))
                else:
                    images.append(item)
                    index.append(i)
            empty = np.zeros((0, size[0], size[1], 3), np.uint8)
            yield DecodedBatch(np.asarray(index, np.int64), np.stack(images) if images else empty, skipped)


def ahead(pool: ThreadPoolExecutor, work: Callable[[T], R], items: Sequence[T], depth: int = 256) -> Iterator[R]:
    """``pool.map(work, items)`` in order, keeping at most ``depth`` results ahead of the consumer (``map`` would
    submit every item at once and hold what is done before it is consumed)."""
    pending: deque[Future[R]] = deque()
    position = 0
    while position < len(items) or pending:
        while position < len(items) and len(pending) < depth:
            pending.append(pool.submit(work, items[position]))
            position += 1
        yield pending.popleft().result()


def scan(source: Path, *, exclude: tuple[Path, ...] = (), ignored: list[str] | None = None) -> list[Sample]:
    """Find labelled images: a folder with one sub-folder per class, or a ``path,label`` CSV.

    In a folder, an image is a file with a suffix Pillow can open (:func:`tlzoo.decode.image_suffixes`) at any
    depth of its class folder. Hidden files and folders (a leading dot) are skipped, and so is anything under
    ``exclude`` (the run's output folder, tlzoo's cache). Symbolic links are followed, to folders and files
    alike, each real folder once. Files passed over for their suffix are appended to ``ignored``. A name that
    is not valid UTF-8 is refused here, in one line, before any work."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"data path {source} does not exist")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{source} is a file but not a .csv; give a folder with one sub-folder per class, or a CSV")
        return _scan_csv(source)
    root = source.resolve()
    skip = {Path(p).resolve() for p in exclude}
    class_dirs = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith(".")
                        and not _loops_back(d, root) and d.resolve() not in skip)  # fmt: skip
    if not class_dirs:
        raise DataError(
            f"{source} has no class folders: expected one sub-folder per class, e.g. {source}/cat/1.jpg, {source}/dog/2.jpg"
        )
    samples: list[Sample] = []
    empty = []
    for d in class_dirs:
        check_name(d)
        files = sorted(_walk(d, skip, ignored))
        if not files:
            empty.append(d.name)
        samples.extend(Sample(p, d.name) for p in files)
    if empty:
        raise DataError(f"class folder(s) with no images in {source}: {', '.join(empty)}")
    return samples


def image_files(folder: Path, ignored: list[str] | None = None) -> list[Path]:
    """Every image under ``folder`` by :func:`scan`'s rules (hidden skipped, links followed, names UTF-8), sorted."""
    check_name(folder)
    return sorted(_walk(folder, set(), ignored))


def _walk(folder: Path, skip: set[Path], ignored: list[str] | None) -> Iterator[Path]:
    """Every image under ``folder``, following symbolic links and visiting each real folder once."""
    seen: set[Path] = set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = Path(top).resolve()
        if real in seen or real in skip:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(top) / name
            if name.startswith(".") or not path.is_file():
                continue
            check_name(path)
            if is_image_file(path):
                yield path
            elif ignored is not None:
                ignored.append(str(path))


def same_files_in_two_classes(files: ImageList, budget: int = 256 << 20) -> list[list[str]]:
    """Groups of byte-identical files filed under different classes (a copy dropped in the wrong folder). Only
    files whose size another class also has are read, and at most ``budget`` bytes of them (uncompressed
    formats, where every file has the same size, would otherwise be read in full on every run)."""
    by_size: dict[int, list[int]] = {}
    for i, path in enumerate(files.paths):
        by_size.setdefault(os.stat(path).st_size, []).append(i)
    candidates = [(size, members) for size, members in by_size.items()
                  if len({int(files.labels[i]) for i in members}) > 1]  # fmt: skip
    if sum(size * len(members) for size, members in candidates) > budget:
        return []
    groups: dict[str, list[int]] = {}
    for _, members in candidates:
        for i in members:
            groups.setdefault(hash_file(files.paths[i]), []).append(i)
    return [[files.paths[i] for i in g] for g in groups.values() if len({int(files.labels[i]) for i in g}) > 1]


SPLIT_FOLDER_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}


def layout_warnings(classes: list[str]) -> list[str]:
    """What looks wrong about a folder's classes without being an error: split folders taken for classes, and
    class names that differ only in case or Unicode normalization (``Red``/``red``, ``café`` NFC/NFD)."""
    import unicodedata

    out = []
    if len(classes) >= 2 and {c.lower() for c in classes} <= SPLIT_FOLDER_NAMES:
        out.append(f"the classes are {', '.join(classes)}: this looks like a folder of splits, one level too high. "
                   f"Give --data FOLDER/train and --val FOLDER/val (and --test FOLDER/test)")  # fmt: skip
    groups: dict[str, list[str]] = {}
    for c in classes:
        groups.setdefault(unicodedata.normalize("NFC", c).casefold(), []).append(c)
    for names in groups.values():
        if len(names) > 1:
            shown = ", ".join(ascii(n) for n in names)
            out.append(f"class folders {shown} differ only in case or Unicode normalization: they are trained as "
                       f"{len(names)} different classes; merge them if they are one")  # fmt: skip
    return out


def check_name(path: Path) -> None:
    """Refuse a name that is not UTF-8 (Latin-1 bytes from an old archive or a Windows share): it could not be
    written to split.csv, a CSV of predictions or a compare table."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
        raise DataError(f"{shown}: the name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8 -r "
                        f"--notest FOLDER)") from None


def ignored_text(ignored: list[str]) -> str:
    """``3 files: .heic (2), .txt (1)``: what a scan passed over for its suffix."""
    suffixes = Counter(Path(p).suffix.lower() or "(no suffix)" for p in ignored)
    return f"{len(ignored)} file(s) that are not images Pillow opens here, by suffix: " + ", ".join(
        f"{k} ({v})" for k, v in suffixes.most_common())


def _loops_back(folder: Path, root: Path) -> bool:
    """A symlink to the data root or into it is not a class: its images belong to other classes already."""
    if not folder.is_symlink():
        return False
    target = folder.resolve()
    return target == root or root in target.parents


def _scan_csv(path: Path) -> list[Sample]:
    """Read as Excel writes it too: a UTF-8 byte-order mark is accepted, quoted fields keep their commas."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if "path" not in columns or "label" not in columns:
                raise DataError(f"{path} must have a header with 'path' and 'label' columns; found {reader.fieldnames}")
            rows = []
            for row in reader:
                if None in row:  # more fields than the header: an unquoted comma
                    raise DataError(
                        f"{path}, line {reader.line_num}: more fields than the header ({', '.join(reader.fieldnames or [])});"
                        f" put a label or path that contains a comma in double quotes"
                    )
                rows.append({k.strip().lower(): (v or "").strip() for k, v in row.items() if k})
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8 (Excel: 'CSV UTF-8')") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV: {exc}") from None
    samples, missing = [], []
    first: dict[Path, tuple[int, str]] = {}
    for line, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise DataError(f"{path}, line {line}: empty path or label")
        image = (path.parent / row["path"]).resolve()
        seen = first.setdefault(image, (line, row["label"]))
        if seen[1] != row["label"]:
            raise DataError(f"{path}, line {line}: {row['path']} is labelled {row['label']!r} here and {seen[1]!r} on "
                            f"line {seen[0]}; give each image one label")  # fmt: skip
        if not image.is_file():
            missing.append(row["path"])
        samples.append(Sample(image, row["label"]))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{path} names {len(missing)} file(s) that do not exist (relative to {path.parent}): {shown}")
    if not samples:
        raise DataError(f"{path} lists no images")
    return samples


def load(samples: list[Sample] | ImageList, size: tuple[int, int], classes: list[str] | None = None, *,
         strict: bool = False, progress: Callable[[], None] | None = None, whole_classes: bool = True,
         threads: int | None = None, prep: Preprocessing | None = None) -> ImageSet:  # fmt: skip
    """Decode and resize every image; corrupt ones are skipped and listed (or raise with ``strict``).

    ``whole_classes``: the samples are a whole dataset, so a class whose every image is unreadable is an
    error (a batch of a larger dataset passes False)."""
    files = samples if isinstance(samples, ImageList) else labelled(samples, classes)
    images, index, skipped = decode_all(files.paths, size, strict=strict, progress=progress, threads=threads, prep=prep)
    if not len(index):
        raise DataError("no readable images: " + _skipped_text(skipped))
    if whole_classes:
        check_lost_classes(files, [files.labels[index]])
    return ImageSet(images, files.labels[index], [files.paths[i] for i in index], files.classes, skipped)


def decode_all(paths: list[str], size: tuple[int, int], *, strict: bool = False,
               progress: Callable[[], None] | None = None, threads: int | None = None,
               prep: Preprocessing | None = None,
               decoder: ImageDecoder | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:  # fmt: skip
    """Every readable image of ``paths`` in one array, their positions in ``paths``, and the unreadable ones
    (``progress()`` after each image read; ``decoder``: see :func:`decode_batches`)."""
    images, index, skipped = [], [], []
    for batch in decode_batches(paths, size, batch_size=64, threads=threads, strict=strict, prep=prep,
                                decoder=decoder):  # fmt: skip
        images.append(batch.images)
        index.append(batch.index)
        skipped += batch.skipped
        if progress is not None:
            for _ in batch.index:
                progress()
    if not images:
        return np.zeros((0, size[0], size[1], 3), np.uint8), np.zeros(0, np.int64), skipped
    return np.concatenate(images), np.concatenate(index), skipped


def check_lost_classes(files: ImageList, readable: list[np.ndarray]) -> None:
    """Refuse a dataset in which every image of some class is unreadable (``readable``: the labels read)."""
    loaded = set(np.concatenate(readable).tolist()) if readable else set()
    lost = [files.classes[c] for c in sorted(set(files.labels.tolist()) - loaded)]
    if lost:
        shown = [(p, "") for p, y in zip(files.paths, files.labels) if files.classes[int(y)] in lost]
        raise DataError(f"every image of class(es) {', '.join(lost)} is unreadable: {_skipped_text(shown)}")


def _skipped_text(skipped: list[tuple[str, str]]) -> str:
    shown = [p for p, _ in skipped[:5]]
    return ", ".join(shown) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")


def check_classes(data: ImageSet | ImageList, what: str = "training data") -> None:
    counts = data.counts()
    present = [c for c, n in counts.items() if n]
    if len(present) < 2:
        raise DataError(f"{what} has a single class ({', '.join(present)}); a classifier needs at least two")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (kept, held out), stratified: scikit-learn's ``train_test_split`` where every class has two
    images and the held-out share can hold one of each; otherwise (small data) class by class, holding out
    ``round(n * fraction)`` of each class, at least one where it has two, and never its last image, so every
    class keeps at least one to train on (a class of one image is only trained on)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    index = np.arange(len(labels))
    counts = np.bincount(labels)
    present = counts[counts > 0]
    n_held = math.ceil(len(labels) * fraction)
    if present.min() >= 2 and len(present) <= n_held <= len(labels) - len(present):
        kept, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels)
        return np.sort(kept), np.sort(held)
    rng = np.random.default_rng(seed)
    held_parts = []
    for c in np.flatnonzero(counts):
        members = rng.permutation(np.flatnonzero(labels == c))
        take = min(len(members) - 1, max(1, round(len(members) * fraction))) if len(members) >= 2 else 0
        held_parts.append(members[:take])
    held = np.sort(np.concatenate(held_parts)) if held_parts else np.zeros(0, np.int64)
    return np.setdiff1d(index, held), held


def fingerprint(paths: list[str], labels: np.ndarray | list[str]) -> str:
    """sha256 over every file's bytes and label, in order: the same data gives the same key."""
    h = hashlib.sha256()
    for path, label in zip(paths, labels):
        h.update(str(label).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\1")
    return h.hexdigest()
