"""Labelled image datasets: ImageFolder or CSV layout, decoding, splits, fingerprints.

Small datasets are the point of transfer learning, so images are decoded once,
converted to RGB, resized to the backbone's input size and kept in memory as
one uint8 array.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .preprocess import is_image_file, load_image


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
        return ImageSet(self.images[index], self.labels[index], [self.paths[i] for i in index], self.classes)

    def counts(self) -> dict[str, int]:
        c = Counter(int(x) for x in self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}


def scan(source: Path) -> list[Sample]:
    """Find labelled images: a folder with one sub-folder per class, or a ``path,label`` CSV."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"data path {source} does not exist")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{source} is a file but not a .csv; give a folder with one sub-folder per class, or a CSV")
        return _scan_csv(source)
    root = source.resolve()
    class_dirs = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith(".") and not _loops_back(d, root))
    if not class_dirs:
        raise DataError(
            f"{source} has no class folders: expected one sub-folder per class, e.g. {source}/cat/1.jpg, {source}/dog/2.jpg"
        )
    samples: list[Sample] = []
    empty = []
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            empty.append(d.name)
        samples.extend(Sample(p, d.name) for p in files)
    if empty:
        raise DataError(f"class folder(s) with no images in {source}: {', '.join(empty)}")
    return samples


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
    for line, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise DataError(f"{path}, line {line}: empty path or label")
        image = (path.parent / row["path"]).resolve()
        if not image.is_file():
            missing.append(row["path"])
        samples.append(Sample(image, row["label"]))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{path} names {len(missing)} file(s) that do not exist (relative to {path.parent}): {shown}")
    if not samples:
        raise DataError(f"{path} lists no images")
    return samples


def load(samples: list[Sample], size: tuple[int, int], classes: list[str] | None = None, *, strict: bool = False,
         progress: object | None = None, whole_classes: bool = True) -> ImageSet:  # fmt: skip
    """Decode and resize every image; corrupt ones are skipped and listed (or raise with ``strict``).

    ``whole_classes``: the samples are a whole dataset, so a class whose every image is unreadable is an
    error (a batch of a larger dataset passes False)."""
    classes = classes or sorted({s.label for s in samples})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DataError(f"labels not seen in training: {', '.join(unknown)} (known: {', '.join(classes)})")
    images, labels, paths, skipped = [], [], [], []
    for s in samples:
        try:
            images.append(load_image(s.path, size))
        except Exception as exc:  # PIL raises many types for truncated or non-image files
            if strict:
                raise DataError(f"cannot read image {s.path}: {type(exc).__name__}: {exc}") from exc
            skipped.append((str(s.path), f"{type(exc).__name__}: {exc}"))
            continue
        labels.append(index[s.label])
        paths.append(str(s.path))
        if progress is not None:
            progress()  # type: ignore[operator]
    if not images:
        raise DataError("no readable images: " + _skipped_text(skipped))
    loaded = set(labels)
    lost = [c for c in sorted({s.label for s in samples}) if index[c] not in loaded] if whole_classes else []
    if lost:
        files = [(str(s.path), "") for s in samples if s.label in lost]
        raise DataError(f"every image of class(es) {', '.join(lost)} is unreadable: {_skipped_text(files)}")
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64), paths, classes, skipped)


def _skipped_text(skipped: list[tuple[str, str]]) -> str:
    shown = [p for p, _ in skipped[:5]]
    return ", ".join(shown) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")


def check_classes(data: ImageSet, what: str = "training data") -> None:
    counts = data.counts()
    present = [c for c, n in counts.items() if n]
    if len(present) < 2:
        raise DataError(f"{what} has a single class ({', '.join(present)}); a classifier needs at least two")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (kept, held out), stratified when every class has at least two images."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    index = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    try:
        kept, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"cannot split {len(labels)} images {1 - fraction:.0%}/{fraction:.0%}: {exc}") from exc
    return np.sort(kept), np.sort(held)


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
