"""From the user's folders to train / val / test, planned on the files (seeded, stratified) and then decoded into the
store or into memory; and the split a run recorded, read back for ``--resume``.

Everything here takes plain values (:class:`Sources`, :class:`Reading`): the training config says what they are
once, and nothing below climbs back to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..cachedir import tlzoo_cache
from ..errors import DataError
from ..files import hash_file
from ..specs import Preprocessing
from .batches import decode_all, load
from .datasets import default_data_root, ensure_digits
from .decode import ImageDecoder
from .folders import ignored_text, layout_warnings, same_files_in_two_classes, scan, shown
from .sets import (ImageList, ImageSet, check_classes, check_lost_classes, fingerprint as files_fingerprint, is_multilabel,
                   labelled)  # fmt: skip


class Progress(Protocol):
    """What the input path says while it works (``tlzoo.training.reporter.Reporter`` is one)."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def task(self, description: str, total: int) -> AbstractContextManager[Callable[[int], None]]: ...

    def class_counts(self, title: str, counts: dict[str, int], images: int | None = None) -> None: ...


@dataclass(frozen=True)
class Sources:
    """Where the labelled images are and how they are split (``--data``, ``--val``, ``--test``, the split fractions
    and the seed). ``data`` None is the embedded digits; ``exclude`` holds folders that are never data (the runs'
    output folder; tlzoo's cache is always excluded)."""

    data: str | None = None
    val: str | None = None
    test: str | None = None
    val_split: float = 0.2
    test_split: float = 0.0
    seed: int = 0
    exclude: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Reading:
    """How images are read: ``strict`` fails on the first unreadable one, ``threads`` decode (None: one per core),
    ``store`` keeps decoded pixels in the store for the next run."""

    strict: bool = False
    threads: int | None = None
    store: bool = True


Part = ImageSet | ImageList


@dataclass
class Splits:
    """train / val / test: planned on the files (:class:`~tlzoo.images.sets.ImageList`), decoded by :func:`decode`."""

    train: Part
    val: Part
    test: Part | None
    classes: list[str]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    decoded: int = 0  # images decoded (not read from the decoded-pixel store) by :func:`decode`
    digests: dict[str, str] = field(default_factory=dict)  # path -> sha256 of its bytes, once :func:`decode` read it

    @property
    def eval_name(self) -> str:
        return "test" if self.test is not None else "val"

    @property
    def eval_set(self) -> Part:
        return self.test if self.test is not None else self.val

    def parts(self) -> list[tuple[str, Part]]:
        return [(name, part) for name, part in (("train", self.train), ("val", self.val), ("test", self.test))
                if part is not None]  # fmt: skip

    @property
    def multilabel(self) -> bool:
        return is_multilabel(self.train.labels)

    def rows(self) -> list[tuple[str, str, str]]:
        """(path, label, subset) of every image; a multi-label image's labels ``;``-joined (maybe none)."""
        def text(y: np.ndarray) -> str:
            return ";".join(self.classes[i] for i in np.flatnonzero(y)) if np.ndim(y) else self.classes[int(y)]

        return [(p, text(y), name) for name, part in self.parts() for p, y in zip(part.paths, part.labels)]

    def warn_skipped(self, reporter: Progress) -> None:
        for path, why in self.skipped:
            reporter.warn(f"skipped unreadable image {shown(path)} ({why})")

    def show_counts(self, reporter: Progress) -> None:
        # Fewer images than --batch-size is fine: the last (here the only) batch is a partial one, as in Keras and fastai.
        title = f"training images ({len(self.train)}; val {len(self.val)}; test {len(self.test) if self.test is not None else 0})"
        if self.multilabel:  # the counts are each label's positives
            reporter.class_counts(title, self.train.counts(), len(self.train))
        else:
            reporter.class_counts(title, self.train.counts())


def plan(sources: Sources, reporter: Progress, reading: Reading = Reading()) -> Splits:
    """Find the labelled files and split them (stratified, seeded) without decoding any: a split depends on
    the files alone, so every strategy, and a run whose features are all cached, sees the same one."""
    if sources.data:
        # Absolute, so split.csv and config.yaml name the same files from any folder (--resume reads them).
        root = Path(sources.data).expanduser().absolute()
    else:
        root = ensure_digits(default_data_root())
        reporter.info(f"no --data given: using the embedded UCI digits at {root}")
    # tlzoo's own output (runs, plots) and its cache are never data, even when they sit inside --data.
    exclude = (*sources.exclude, tlzoo_cache())
    ignored: list[str] = []
    full = labelled(scan(root, exclude=exclude, ignored=ignored))
    if ignored:
        reporter.warn(f"skipped {ignored_text(ignored)} (in {root})")
    for warning in layout_warnings(full.classes):
        reporter.warn(warning)
    twins = same_files_in_two_classes(full)
    if twins:
        shown = "; ".join(" = ".join(group) for group in twins[:3]) + (f"; and {len(twins) - 3} more" if len(twins) > 3 else "")
        reporter.warn(f"{len(twins)} image(s) are filed under two or more classes with the same bytes: {shown}")
    for flag, other in (("--val", sources.val), ("--test", sources.test)):
        if other and Path(other).expanduser().resolve() == root.resolve():
            raise DataError(f"{flag} {other} is the --data folder itself: the model would be scored on the images it "
                            f"trained on. Give a separate folder, or leave {flag} out to split --data")  # fmt: skip
    try:
        splits = _split(sources, root, full)
    except DataError:
        # A split that cannot be stratified may be one whose classes have no readable image at all: say so.
        load(full, (8, 8), strict=reading.strict, threads=reading.threads)
        raise
    _say_small_classes(splits, sources, reporter)
    return splits


def _say_small_classes(splits: Splits, sources: Sources, reporter: Progress) -> None:
    """Small data trains: name the classes too small to give the held-out parts an image, and refuse (in one
    line, with the fix) only a validation set left empty."""
    held = [("validation", splits.val, "--val-split")] if not sources.val else []
    if splits.multilabel:
        if not sources.val and len(splits.val) == 0:
            raise DataError("too few images to hold one out for validation: add images, or give a separate --val file")
        return
    if splits.test is not None and not sources.test:
        held.append(("test", splits.test, "--test-split"))
    train_counts = splits.train.counts()
    for what, part, flag in held:
        counts = part.counts()
        short = [c for c in splits.classes if not counts[c]]
        if len(part) == 0:
            raise DataError(f"no class has enough images to hold one out for {what} ({', '.join(short[:10])}"
                            f"{' ...' if len(short) > 10 else ''}): add images, or give a separate "
                            f"{'--val' if what == 'validation' else '--test'} folder")  # fmt: skip
        if short:
            shown = ", ".join(f"{c} ({train_counts[c]})" for c in short[:10]) + (" ..." if len(short) > 10 else "")
            reporter.warn(f"{len(short)} class(es) too small to hold an image out for {what} ({flag} {getattr(sources, flag[2:].replace('-', '_'))}); "
                          f"they train on all their images and {what} says nothing about them: {shown}")  # fmt: skip


def _split(sources: Sources, root: Path, full: ImageList) -> Splits:
    classes = full.classes
    multilabel = is_multilabel(full.labels)
    test: ImageList | None = None
    if sources.test:
        test = labelled(scan(Path(sources.test)), classes, multilabel)
    elif sources.test_split > 0:
        keep, held = stratified_split(full.labels, sources.test_split, sources.seed)
        full, test = full.subset(keep), full.subset(held)
    if sources.val:
        train, val = full, labelled(scan(Path(sources.val)), classes, multilabel)
    else:
        keep, held = stratified_split(full.labels, sources.val_split, sources.seed + 1)
        train, val = full.subset(keep), full.subset(held)
    if multilabel:
        _check_labels_train(train, val, test)
    check_classes(train)
    return Splits(train=train, val=val, test=test, classes=classes, root=root)


def _check_labels_train(train: ImageList, val: ImageList, test: ImageList | None) -> None:
    """A label with positives in validation or test and none in training cannot be learnt: one line."""
    trained = train.labels.sum(axis=0) > 0
    for name, part in (("validation", val), ("test", test)):
        if part is None or not len(part):
            continue
        only = [part.classes[i] for i in np.flatnonzero((part.labels.sum(axis=0) > 0) & ~trained)]
        if only:
            raise DataError(f"label(s) {', '.join(only[:10])} appear only in the {name} images, never in training: "
                            f"add training images that carry them, or drop the label")  # fmt: skip


def readable(splits: Splits, kept: dict[str, np.ndarray], skipped: dict[str, list[tuple[str, str]]]) -> Splits:
    """``splits`` without its unreadable images: ``kept[name]`` indexes the readable ones of each part."""
    parts = {name: part.subset(kept[name]) for name, part in splits.parts()}
    empty = [name for name, part in parts.items() if len(part) == 0 and name != "train"]
    if empty:
        raise DataError(f"no readable images in the {empty[0]} split: " + ", ".join(p for p, _ in skipped[empty[0]][:5]))
    everything = ImageList([p for _, part in splits.parts() for p in part.paths],
                           np.concatenate([part.labels for _, part in splits.parts()]), splits.classes)
    check_lost_classes(everything, [part.labels for part in parts.values()])
    check_classes(parts["train"])
    lost = [p for name, _ in splits.parts() for p in skipped[name]]
    return Splits(train=parts["train"], val=parts["val"], test=parts.get("test"), classes=splits.classes,
                  root=splits.root, skipped=lost)  # fmt: skip


def decode(splits: Splits, size: tuple[int, int], reading: Reading, reporter: Progress,
           prep: Preprocessing | None = None, decoder: ImageDecoder | None = None) -> Splits:  # fmt: skip
    """Every part decoded (by ``prep``'s resize policy; the JPEGs by ``decoder`` when given) into the store, or
    into memory (the strategies that go over the images every epoch)."""
    from . import store
    from .decode import SQUASH

    names = {"train": "training", "val": "validation", "test": "test"}
    kept, skipped = {}, {}
    digests: dict[str, str] = {}
    decoded: dict[str, Any] = {}  # in-memory arrays, or the store's (tlzoo.images.store.StoreImages)
    off = store.disabled() if reading.store else None
    if off:
        reporter.info(f"{off}: images are decoded into memory")
    use_store = reading.store and not off
    count = 0
    for name, part in splits.parts():
        assert isinstance(part, ImageList)
        with reporter.task(f"loading {names[name]} images", len(part)) as advance:
            if use_store:
                try:
                    filled = store.images(tlzoo_cache(), part.paths, size, prep or SQUASH, decoder=decoder,
                                          threads=reading.threads, strict=reading.strict, progress=advance,
                                          say=reporter.info)  # fmt: skip
                    kept[name], skipped[name], decoded[name] = filled.kept, filled.skipped, filled.images
                    digests.update(zip((part.paths[i] for i in filled.kept), filled.digests))
                    count += filled.decoded
                    continue
                except store.StoreUnavailable as exc:
                    reporter.warn(f"{exc}: decoding into memory instead")
                    use_store = False
            images, index, lost = decode_all(part.paths, size, strict=reading.strict, progress=lambda: advance(1),
                                             threads=reading.threads, prep=prep, decoder=decoder)  # fmt: skip
        kept[name], skipped[name], decoded[name] = index, lost, images
        paths = [part.paths[i] for i in index]
        # what --resume checks; --no-cache reads nothing of the store, not even its aliases
        digests.update(zip(paths, store.content_digests(tlzoo_cache(), paths) if reading.store
                           else [hash_file(p) for p in paths]))  # fmt: skip
        count += len(part)
    out = readable(splits, kept, skipped)
    out.decoded, out.digests = count, digests
    for name, part in out.parts():
        setattr(out, name, ImageSet(decoded[name], part.labels, part.paths, part.classes))
    return out


def part_fingerprint(part: Part) -> str:
    """sha256 over the part's files and labels (see :func:`tlzoo.images.sets.fingerprint`)."""
    return files_fingerprint(part.paths, np.asarray(part.labels))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (kept, held out), stratified: scikit-learn's ``train_test_split`` where every class has two
    images and the held-out share can hold one of each; otherwise (small data) class by class, holding out
    ``round(n * fraction)`` of each class, at least one where it has two, and never its last image, so every
    class keeps at least one to train on (a class of one image is only trained on)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    if is_multilabel(labels):
        return multilabel_split(labels, fraction, seed)
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


def multilabel_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (kept, held out) of a multi-label set: iterative stratification (Sechidis et al. 2011, order 1,
    ``iterative-stratification``'s ``MultilabelStratifiedShuffleSplit``), which keeps each label's share of
    positives about equal in both parts. A set too small to hold one image out keeps them all."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    n = len(labels)
    n_held = math.ceil(n * fraction)
    if n < 2 or n_held >= n:
        return np.arange(n), np.zeros(0, np.int64)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    kept, held = next(splitter.split(np.zeros((n, 1)), np.asarray(labels, np.int64)))
    return np.sort(kept), np.sort(held)
