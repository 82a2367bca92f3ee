"""From the user's folders to decoded train / val / test sets, with the split recorded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import data as datamod
from ..datasets import ensure_digits
from ..errors import DataError
from .config import TrainConfig
from .reporter import Reporter


@dataclass
class Splits:
    train: datamod.ImageSet
    val: datamod.ImageSet
    test: datamod.ImageSet | None
    classes: list[str]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def eval_name(self) -> str:
        return "test" if self.test is not None else "val"

    @property
    def eval_set(self) -> datamod.ImageSet:
        return self.test if self.test is not None else self.val

    def rows(self) -> list[tuple[str, str, str]]:
        out = []
        for name, part in (("train", self.train), ("val", self.val), ("test", self.test)):
            if part is not None:
                out += [(p, self.classes[int(y)], name) for p, y in zip(part.paths, part.labels)]
        return out


def default_data_root() -> Path:
    base = os.environ.get("TLZOO_DATA") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "tlzoo", "datasets")
    return Path(base).expanduser()


def _load(source: Path, size: tuple[int, int], classes: list[str] | None, cfg: TrainConfig, reporter: Reporter,
          what: str) -> datamod.ImageSet:  # fmt: skip
    samples = datamod.scan(source)
    with reporter.task(f"loading {what} images", len(samples)) as advance:
        return datamod.load(samples, size, classes, strict=cfg.strict, progress=lambda: advance(1))


def prepare(cfg: TrainConfig, size: tuple[int, int], reporter: Reporter) -> Splits:
    if cfg.data:
        root = Path(cfg.data).expanduser()
    else:
        root = ensure_digits(default_data_root())
        reporter.info(f"no --data given: using the embedded UCI digits at {root}")
    full = _load(root, size, None, cfg, reporter, "training")
    classes = full.classes
    skipped = list(full.skipped)
    if cfg.test:
        test: datamod.ImageSet | None = _load(Path(cfg.test), size, classes, cfg, reporter, "test")
        skipped += test.skipped  # type: ignore[union-attr]
    elif cfg.test_split > 0:
        keep, held = datamod.stratified_split(full.labels, cfg.test_split, cfg.seed)
        full, test = full.subset(keep), full.subset(held)
    else:
        test = None
    if cfg.val:
        val = _load(Path(cfg.val), size, classes, cfg, reporter, "validation")
        skipped += val.skipped
        train = full
    else:
        keep, held = datamod.stratified_split(full.labels, cfg.val_split, cfg.seed + 1)
        train, val = full.subset(keep), full.subset(held)
    datamod.check_classes(train)
    # Fewer images than --batch-size is fine: the last (here the only) batch is a partial one, as in Keras and fastai.
    for path, why in skipped:
        reporter.warn(f"skipped unreadable image {path} ({why})")
    reporter.class_counts(f"training images ({len(train)}; val {len(val)}; test {len(test) if test else 0})", train.counts())
    return Splits(train=train, val=val, test=test, classes=classes, root=root, skipped=skipped)


def fingerprint(part: datamod.ImageSet) -> str:
    return datamod.fingerprint(part.paths, np.asarray(part.labels))
