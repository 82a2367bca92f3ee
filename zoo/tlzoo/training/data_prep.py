"""From the user's folders to decoded train / val / test sets, with the split recorded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import data as datamod
from ..errors import DataError
from ..specs import Preprocessing
from ..datasets import ensure_digits
from .cache import cache_root
from .config import TrainConfig
from .reporter import Reporter


Part = datamod.ImageSet | datamod.ImageList


@dataclass
class Splits:
    """train / val / test: planned on the files (:class:`~tlzoo.data.ImageList`), decoded by :func:`decode`."""

    train: Part
    val: Part
    test: Part | None
    classes: list[str]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def eval_name(self) -> str:
        return "test" if self.test is not None else "val"

    @property
    def eval_set(self) -> Part:
        return self.test if self.test is not None else self.val

    def parts(self) -> list[tuple[str, Part]]:
        return [(name, part) for name, part in (("train", self.train), ("val", self.val), ("test", self.test))
                if part is not None]  # fmt: skip

    def rows(self) -> list[tuple[str, str, str]]:
        return [(p, self.classes[int(y)], name) for name, part in self.parts() for p, y in zip(part.paths, part.labels)]

    def warn_skipped(self, reporter: Reporter) -> None:
        for path, why in self.skipped:
            reporter.warn(f"skipped unreadable image {path} ({why})")

    def show_counts(self, reporter: Reporter) -> None:
        # Fewer images than --batch-size is fine: the last (here the only) batch is a partial one, as in Keras and fastai.
        reporter.class_counts(f"training images ({len(self.train)}; val {len(self.val)}; "
                              f"test {len(self.test) if self.test is not None else 0})", self.train.counts())  # fmt: skip


def default_data_root() -> Path:
    base = os.environ.get("TLZOO_DATA") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "tlzoo", "datasets")
    return Path(base).expanduser()


def plan(cfg: TrainConfig, reporter: Reporter) -> Splits:
    """Find the labelled files and split them (stratified, seeded) without decoding any: a split depends on
    the files alone, so every strategy, and a run whose features are all cached, sees the same one."""
    if cfg.data:
        root = Path(cfg.data).expanduser()
    else:
        root = ensure_digits(default_data_root())
        reporter.info(f"no --data given: using the embedded UCI digits at {root}")
    # tlzoo's own output (runs, plots) and its cache are never data, even when they sit inside --data.
    exclude = (Path(cfg.out_dir).expanduser(), cache_root().parent)
    ignored: list[str] = []
    full = datamod.labelled(datamod.scan(root, exclude=exclude, ignored=ignored))
    if ignored:
        reporter.warn(f"skipped {datamod.ignored_text(ignored)} (in {root})")
    try:
        return _split(cfg, root, full)
    except DataError:
        # A split that cannot be stratified may be one whose classes have no readable image at all: say so.
        datamod.load(full, (8, 8), strict=cfg.strict, threads=cfg.workers or None)
        raise


def _split(cfg: TrainConfig, root: Path, full: datamod.ImageList) -> Splits:
    classes = full.classes
    test: datamod.ImageList | None = None
    if cfg.test:
        test = datamod.labelled(datamod.scan(Path(cfg.test)), classes)
    elif cfg.test_split > 0:
        keep, held = datamod.stratified_split(full.labels, cfg.test_split, cfg.seed)
        full, test = full.subset(keep), full.subset(held)
    if cfg.val:
        train, val = full, datamod.labelled(datamod.scan(Path(cfg.val)), classes)
    else:
        keep, held = datamod.stratified_split(full.labels, cfg.val_split, cfg.seed + 1)
        train, val = full.subset(keep), full.subset(held)
    datamod.check_classes(train)
    return Splits(train=train, val=val, test=test, classes=classes, root=root)


def readable(splits: Splits, kept: dict[str, np.ndarray], skipped: dict[str, list[tuple[str, str]]]) -> Splits:
    """``splits`` without its unreadable images: ``kept[name]`` indexes the readable ones of each part."""
    parts = {name: part.subset(kept[name]) for name, part in splits.parts()}
    empty = [name for name, part in parts.items() if len(part) == 0 and name != "train"]
    if empty:
        raise DataError(f"no readable images in the {empty[0]} split: " + ", ".join(p for p, _ in skipped[empty[0]][:5]))
    everything = datamod.ImageList([p for _, part in splits.parts() for p in part.paths],
                                   np.concatenate([part.labels for _, part in splits.parts()]), splits.classes)  # fmt: skip
    datamod.check_lost_classes(everything, [part.labels for part in parts.values()])
    datamod.check_classes(parts["train"])
    lost = [p for name, _ in splits.parts() for p in skipped[name]]
    return Splits(train=parts["train"], val=parts["val"], test=parts.get("test"), classes=splits.classes,
                  root=splits.root, skipped=lost)  # fmt: skip


def decode(splits: Splits, size: tuple[int, int], cfg: TrainConfig, reporter: Reporter,
           prep: Preprocessing | None = None) -> Splits:  # fmt: skip
    """Every part decoded (by ``prep``'s resize policy) and held in memory (the strategies that go over the
    images every epoch)."""
    names = {"train": "training", "val": "validation", "test": "test"}
    kept, skipped, decoded = {}, {}, {}
    for name, part in splits.parts():
        assert isinstance(part, datamod.ImageList)
        with reporter.task(f"loading {names[name]} images", len(part)) as advance:
            images, index, lost = datamod.decode_all(part.paths, size, strict=cfg.strict, progress=lambda: advance(1),
                                                     threads=cfg.workers or None, prep=prep)  # fmt: skip
        kept[name], skipped[name], decoded[name] = index, lost, images
    out = readable(splits, kept, skipped)
    for name, part in out.parts():
        setattr(out, name, datamod.ImageSet(decoded[name], part.labels, part.paths, part.classes))
    return out


def prepare(cfg: TrainConfig, size: tuple[int, int], reporter: Reporter, prep: Preprocessing | None = None) -> Splits:
    """Plan the split and decode every part (see :func:`plan` and :func:`decode`)."""
    splits = decode(plan(cfg, reporter), size, cfg, reporter, prep)
    splits.warn_skipped(reporter)
    splits.show_counts(reporter)
    return splits


def fingerprint(part: Part) -> str:
    return datamod.fingerprint(part.paths, np.asarray(part.labels))
