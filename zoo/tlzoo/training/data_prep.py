"""From the user's folders to decoded train / val / test sets, with the split recorded."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import data as datamod
from ..decode import ImageDecoder
from ..errors import DataError, UsageError
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
    decoded: int = 0  # images decoded (not read from the decoded-pixel store) by :func:`decode`

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
        # Absolute, so split.csv and config.yaml name the same files from any folder (--resume reads them).
        root = Path(cfg.data).expanduser().absolute()
    else:
        root = ensure_digits(default_data_root())
        reporter.info(f"no --data given: using the embedded UCI digits at {root}")
    # tlzoo's own output (runs, plots) and its cache are never data, even when they sit inside --data.
    exclude = (Path(cfg.out_dir).expanduser(), cache_root().parent)
    ignored: list[str] = []
    full = datamod.labelled(datamod.scan(root, exclude=exclude, ignored=ignored))
    if ignored:
        reporter.warn(f"skipped {datamod.ignored_text(ignored)} (in {root})")
    for warning in datamod.layout_warnings(full.classes):
        reporter.warn(warning)
    twins = datamod.same_files_in_two_classes(full)
    if twins:
        shown = "; ".join(" = ".join(group) for group in twins[:3]) + (f"; and {len(twins) - 3} more" if len(twins) > 3 else "")
        reporter.warn(f"{len(twins)} image(s) are filed under two or more classes with the same bytes: {shown}")
    for flag, other in (("--val", cfg.val), ("--test", cfg.test)):
        if other and Path(other).expanduser().resolve() == root.resolve():
            raise DataError(f"{flag} {other} is the --data folder itself: the model would be scored on the images it "
                            f"trained on. Give a separate folder, or leave {flag} out to split --data")  # fmt: skip
    try:
        splits = _split(cfg, root, full)
    except DataError:
        # A split that cannot be stratified may be one whose classes have no readable image at all: say so.
        datamod.load(full, (8, 8), strict=cfg.strict, threads=cfg.workers or None)
        raise
    _say_small_classes(splits, cfg, reporter)
    return splits


def _say_small_classes(splits: Splits, cfg: TrainConfig, reporter: Reporter) -> None:
    """Small data trains: name the classes too small to give the held-out parts an image, and refuse (in one
    line, with the fix) only a validation set left empty."""
    held = [("validation", splits.val, "--val-split")] if not cfg.val else []
    if splits.test is not None and not cfg.test:
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
            reporter.warn(f"{len(short)} class(es) too small to hold an image out for {what} ({flag} {getattr(cfg, flag[2:].replace('-', '_'))}); "
                          f"they train on all their images and {what} says nothing about them: {shown}")  # fmt: skip


def recorded(run_dir: Path, cfg: TrainConfig) -> Splits:
    """The split an interrupted run recorded (``split.csv``), for ``--resume``: the same files in the same parts,
    whatever ``--data`` now holds or the current folder is. A file missing or changed since is refused in one
    line, before anything is decoded."""
    from ..runfiles import SPLIT, RunFiles

    files = RunFiles(run_dir)
    try:
        classes = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
        assert isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    except (OSError, ValueError, AssertionError):
        raise UsageError(f"{run_dir} has no readable labels.json; it cannot be resumed (start a new run)") from None
    rows = files.read_split(None, classes)
    if not rows:
        raise UsageError(f"{run_dir / SPLIT} lists no images; it cannot be resumed (start a new run)")
    missing = [r["path"] for r in rows if not os.path.isfile(r["path"])]
    changed = [r["path"] for r in rows if r["path"] not in missing and r.get("bytes")
               and str(os.stat(r["path"]).st_size) != r["bytes"]]  # fmt: skip
    for what, paths in (("missing", missing), ("changed", changed)):
        if paths:
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            raise DataError(f"--resume trains on the split {run_dir / SPLIT} recorded, and {len(paths)} of its "
                            f"{len(rows)} files are {what} since: {shown}. Put them back, or start a new run")  # fmt: skip
    index = {c: i for i, c in enumerate(classes)}
    parts = {}
    for name in ("train", "val", "test"):
        chosen = [r for r in rows if r["subset"] == name]
        parts[name] = datamod.ImageList([r["path"] for r in chosen], np.asarray([index[r["label"]] for r in chosen],
                                        np.int64), classes) if chosen else None  # fmt: skip
    if parts["train"] is None or parts["val"] is None:
        raise UsageError(f"{run_dir / SPLIT} has no training or no validation images; it cannot be resumed")
    return Splits(train=parts["train"], val=parts["val"], test=parts["test"], classes=classes,
                  root=Path(cfg.data) if cfg.data else default_data_root())  # fmt: skip


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
           prep: Preprocessing | None = None, decoder: ImageDecoder | None = None) -> Splits:  # fmt: skip
    """Every part decoded (by ``prep``'s resize policy; the JPEGs by ``decoder`` when given) into the store, or
    into memory (the strategies that go over the images every epoch)."""
    from .. import store
    from ..decode import SQUASH

    names = {"train": "training", "val": "validation", "test": "test"}
    kept, skipped = {}, {}
    decoded: dict[str, Any] = {}  # in-memory arrays, or the store's (tlzoo.store.StoreImages)
    use_store = cfg.cache
    count = 0
    for name, part in splits.parts():
        assert isinstance(part, datamod.ImageList)
        with reporter.task(f"loading {names[name]} images", len(part)) as advance:
            if use_store:
                try:
                    filled = store.images(cache_root().parent, part.paths, size, prep or SQUASH, decoder=decoder,
                                          threads=cfg.workers or None, strict=cfg.strict, progress=advance)  # fmt: skip
                    kept[name], skipped[name], decoded[name] = filled.kept, filled.skipped, filled.images
                    count += filled.decoded
                    continue
                except store.StoreUnavailable as exc:
                    reporter.warn(f"{exc}: decoding into memory instead")
                    use_store = False
            images, index, lost = datamod.decode_all(part.paths, size, strict=cfg.strict, progress=lambda: advance(1),
                                                     threads=cfg.workers or None, prep=prep, decoder=decoder)  # fmt: skip
        kept[name], skipped[name], decoded[name] = index, lost, images
        count += len(part)
    out = readable(splits, kept, skipped)
    out.decoded = count
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
