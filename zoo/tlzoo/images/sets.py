"""Labelled images: files not yet decoded (:class:`ImageList`, what a split is planned on and feature extraction
streams) and decoded ones (:class:`ImageSet`, one uint8 array at the input size, or the store's view of it)."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import hash_file


@dataclass
class Sample:
    """One labelled file: ``label`` its class, or for a multi-label CSV ``tags``, its labels (maybe none), with
    ``label`` their ``;``-joined text."""

    path: Path
    label: str
    tags: tuple[str, ...] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The labels this file carries: its tags, or its one class."""
        return self.tags if self.tags is not None else (self.label,)


def is_multilabel(labels: np.ndarray) -> bool:
    """Labels of a multi-label set are a 0/1 matrix (images x labels); a single-label set's, one class index each."""
    return np.ndim(labels) == 2


def label_counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Images per class, or for multi-label labels, positives per label."""
    labels = np.asarray(labels)
    if is_multilabel(labels):
        return {name: int(n) for name, n in zip(classes, labels.sum(axis=0).tolist() if len(labels) else [0] * len(classes))}
    c = Counter(int(x) for x in labels)
    return {name: c.get(i, 0) for i, name in enumerate(classes)}


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
        return label_counts(self.labels, self.classes)


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
        return label_counts(self.labels, self.classes)

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


def labelled(samples: list[Sample], classes: list[str] | None = None, multilabel: bool | None = None) -> ImageList:
    """The samples as an :class:`ImageList` with integer labels over ``classes`` (default: the samples' own); a
    multi-label CSV's (or any samples when ``multilabel``) as a 0/1 matrix over the labels. A single-label
    file in a multi-label set carries its one class as its one label."""
    multilabel = any(s.tags is not None for s in samples) if multilabel is None else multilabel
    if multilabel:
        names = sorted({name for s in samples for name in s.names})
        classes = classes or names
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise DataError(f"labels not seen in training: {', '.join(unknown)} (known: {', '.join(classes)})")
        matrix = np.zeros((len(samples), len(classes)), np.uint8)
        for row, s in enumerate(samples):
            matrix[row, [index[name] for name in s.names]] = 1
        return ImageList([str(s.path) for s in samples], matrix, classes)
    if any(s.tags is not None for s in samples):
        raise DataError("a multi-label CSV (a 'labels' column, or one-hot columns) was given for a single-label "
                        "model or set: give a 'path,label' CSV or a folder of class folders")  # fmt: skip
    classes = classes or sorted({s.label for s in samples})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DataError(f"labels not seen in training: {', '.join(unknown)} (known: {', '.join(classes)})")
    return ImageList([str(s.path) for s in samples], np.asarray([index[s.label] for s in samples], np.int64), classes)


def check_classes(data: ImageSet | ImageList, what: str = "training data") -> None:
    counts = data.counts()
    if is_multilabel(data.labels):
        if not any(counts.values()):
            raise DataError(f"{what} has no image with a label; a classifier needs some")
        return
    present = [c for c, n in counts.items() if n]
    if len(present) < 2:
        raise DataError(f"{what} has a single class ({', '.join(present)}); a classifier needs at least two")


def check_lost_classes(files: ImageList, readable: list[np.ndarray]) -> None:
    """Refuse a dataset in which every image of some class is unreadable (``readable``: the labels read)."""
    if is_multilabel(files.labels):
        had = files.labels.sum(axis=0) > 0
        kept = sum((np.asarray(r).sum(axis=0) for r in readable if len(r)), np.zeros(len(files.classes))) > 0
        lost_at = np.flatnonzero(had & ~kept)
        lost = [files.classes[c] for c in lost_at]
        if lost:
            shown = [(p, "") for p, y in zip(files.paths, files.labels) if y[lost_at].any()]
            raise DataError(f"every image of label(s) {', '.join(lost)} is unreadable: {skipped_text(shown)}")
        return
    loaded = set(np.concatenate(readable).tolist()) if readable else set()
    lost = [files.classes[c] for c in sorted(set(files.labels.tolist()) - loaded)]
    if lost:
        shown = [(p, "") for p, y in zip(files.paths, files.labels) if files.classes[int(y)] in lost]
        raise DataError(f"every image of class(es) {', '.join(lost)} is unreadable: {skipped_text(shown)}")


def skipped_text(skipped: list[tuple[str, str]]) -> str:
    shown = [p for p, _ in skipped[:5]]
    return ", ".join(shown) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")


def fingerprint(paths: list[str], labels: np.ndarray | list[str]) -> str:
    """sha256 over every file's bytes and label, in order: the same data gives the same key."""
    h = hashlib.sha256()
    for path, label in zip(paths, labels):
        h.update((str(label) if np.ndim(label) == 0 else ",".join(str(int(v)) for v in label)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\1")
    return h.hexdigest()
