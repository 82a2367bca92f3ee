"""The resolved training configuration: what a run did, and how to run it again."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

STRATEGIES = {
    "feature-extract": "backbone frozen; bottleneck features computed once and cached; a new head trained on them",
    "fine-tune": "first --freeze units frozen; the rest and a new head trained together, backbone at a lower lr",
    "two-stage": "stage 1 trains the head on a frozen backbone; stage 2 unfreezes (--unfreeze) at a lower lr",
    "scratch": "same architecture, random initialisation, everything trained",
}
HEADS = {
    "softmax": "multinomial logistic regression (scikit-learn)",
    "logreg-ovr": "one binary logistic regression per class (scikit-learn)",
    "linear-svm": "linear support vector machine, one-vs-rest (scikit-learn)",
    "mlp": "hidden dense layers with dropout (--hidden, --dropout)",
}
SKLEARN_HEADS = ("softmax", "logreg-ovr", "linear-svm")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "none")
AUGMENTATIONS = ("flip", "crop")
MAX_IMAGE_SIZE = 2048  # a 2048x2048 RGB batch of 32 is already 1.5 GB of float32 input


@dataclass
class TrainConfig:
    backbone: str = "mobilenet_v2"
    framework: str | None = None
    weights: str | None = "auto"
    data: str | None = None
    val: str | None = None
    test: str | None = None
    val_split: float = 0.2
    test_split: float = 0.0
    image_size: int | None = None
    strategy: str = "feature-extract"
    head: str = "softmax"
    hidden: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.2
    c: float | None = None
    tap: str | None = None
    freeze: str | None = None
    unfreeze: str = "all"
    stage1_epochs: int = 3
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    optimizer: str = "adamw"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    patience: int = 5
    augment: str = "auto"
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    strict: bool = False
    cache: bool = True
    tensorboard: bool = False
    name: str | None = None
    out_dir: str = "runs"

    def validate(self) -> None:
        """Check every value's range and type before any image is decoded or model built."""
        _check_types(self)
        _choice("--strategy", self.strategy, STRATEGIES)
        _choice("--head", self.head, HEADS)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--schedule", self.schedule, SCHEDULES)
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
                            ("--stage1-epochs", self.stage1_epochs)):  # fmt: skip
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, got {value}")
        for flag, value in (("--patience", self.patience), ("--workers", self.workers)):
            if value < 0:
                raise UsageError(f"{flag} must be 0 or more, got {value}")
        for flag, share in (("--val-split", self.val_split), ("--test-split", self.test_split)):
            if not 0 <= share < 1:  # NaN fails too
                raise UsageError(f"{flag} must be in [0, 1), got {share}")
        if not self.val and self.val_split <= 0:
            raise UsageError("--val-split must be above 0 unless a --val folder is given: training needs validation images")
        if self.val_split + self.test_split >= 1:
            raise UsageError(f"--val-split {self.val_split} and --test-split {self.test_split} leave no training images")
        if self.image_size is not None and not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise UsageError(f"--image-size must be between 1 and {MAX_IMAGE_SIZE} pixels, got {self.image_size}")
        if self.c is not None and not self.c > 0:
            raise UsageError(f"--C must be positive, got {self.c}")
        if not self.lr > 0 or not math.isfinite(self.lr) or not self.backbone_lr_mult >= 0:
            raise UsageError("--lr must be positive and finite, and --backbone-lr-mult not negative")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.momentum < 1 or not self.weight_decay >= 0:
            raise UsageError("momentum must be in [0, 1) and weight decay not negative")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise UsageError(f"--hidden must list positive layer sizes, got {self.hidden}")
        if self.name is not None:
            check_run_name(self.name)
        if not re.fullmatch(r"auto|cpu|mps|gpu|cuda(:\d+)?|\d+(,\d+)*", self.device.strip().lower()):
            raise UsageError(f"--device {self.device!r} is not a device: use auto, cpu, cuda, cuda:N, N or mps")
        for part in self.augment_list():
            _choice("--augment", part, AUGMENTATIONS)
        if self.tensorboard:
            from .tensorboard import check_available

            check_available()

    @property
    def uses_sklearn_head(self) -> bool:
        return self.strategy == "feature-extract" and self.head in SKLEARN_HEADS

    def apply_given(self, given: Collection[str]) -> list[str]:
        """Apply the rule for options given explicitly (on the command line, in a config file or to the API).

        ``--freeze`` without ``--strategy`` selects fine-tune. Any other strategy-specific option given with a
        strategy it does not fit is refused, naming both. Returns notes for the run's log.
        """
        notes = []
        if "freeze" in given and "strategy" not in given and self.freeze is not None:
            self.strategy = "fine-tune"
            notes.append(f"--freeze {self.freeze} selects --strategy fine-tune")
        for key in sorted(given):
            rule = SPECIFIC.get(key)
            if rule is None:
                continue
            flag, fits, applies = rule
            if getattr(self, key) is not None and not fits(self):
                raise UsageError(f"{flag} does not fit {self.describe_choice()}: it applies to {applies}")
        if "augment" in given and self.strategy == "feature-extract" and self.augment_list():
            raise UsageError(
                f"--augment {self.augment} does not fit --strategy feature-extract: its features are computed once "
                f"from the unaugmented images; augmentation applies to fine-tune, two-stage and scratch"
            )
        if self.head != "softmax" and self.strategy != "feature-extract":
            raise UsageError(
                f"--head {self.head} does not fit --strategy {self.strategy}: the scikit-learn and MLP heads apply "
                f"to feature-extract; {self.strategy} trains a softmax head end to end"
            )
        return notes

    def checked(self, given: Collection[str]) -> tuple[TrainConfig, list[str]]:
        """A validated copy with the given-options rule applied (the caller's object is left as it was), and
        the notes for the run's log: what ``tlzoo train`` checks before any data is read."""
        cfg = TrainConfig(**self.to_dict())
        cfg.validate()  # first, so that an unknown strategy is named as such rather than as a misfit
        notes = cfg.apply_given(given)
        cfg.validate()
        return cfg, notes

    def unused(self, given: Collection[str]) -> list[str]:
        """The generic options given that this strategy and head do not use (accepted, and said)."""
        return [GENERIC[key][0] for key in sorted(given) if key in GENERIC and not GENERIC[key][1](self)]

    def describe_choice(self) -> str:
        return f"--strategy {self.strategy}" + (f" --head {self.head}" if self.strategy == "feature-extract" else "")

    def given_by_default(self) -> set[str]:
        """The settings whose value differs from the default: what a config file or an API call set."""
        defaults = TrainConfig()
        return {f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(defaults, f.name)}

    def augment_list(self) -> list[str]:
        value = (self.augment or "none").strip().lower()
        if value == "auto":
            return [] if self.strategy == "feature-extract" else ["flip", "crop"]
        if value in ("none", "off", "false", ""):
            return []
        return [a.strip() for a in value.split(",") if a.strip()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        import yaml

        from ..rundir import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.load_given(path)[0]

    @classmethod
    def load_given(cls, path: Path) -> tuple[TrainConfig, set[str]]:
        """A config file's settings, and what it sets: its non-default values, and its strategy whenever it
        names one (a saved run's config.yaml names every setting)."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise UsageError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"config file {path} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path}: a config file is a mapping of settings (key: value), not a {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        cfg = cls(**data)
        _check_types(cfg, source=str(path))
        given = cfg.given_by_default()
        if "strategy" in data:
            given.add("strategy")
        return cfg, given


def check_run_name(name: str) -> None:
    """A run name names one folder inside --out-dir: no path separators, no '..', nothing hidden."""
    if not name or name.strip() != name or name in (".", "..") or name.startswith(".") or any(
        ch in name for ch in ("/", "\\", "\0", ":")
    ):
        raise UsageError(f"--name {name!r} is not a run name: use letters, digits, '-', '_' and '.', no path separators")


# Settings that mean something to some strategies or heads only: (flag, does it fit, what it applies to).
SPECIFIC: dict[str, tuple[str, Callable[[TrainConfig], bool], str]] = {
    "freeze": ("--freeze", lambda c: c.strategy == "fine-tune", "--strategy fine-tune (two-stage takes --unfreeze)"),
    "unfreeze": ("--unfreeze", lambda c: c.strategy == "two-stage", "--strategy two-stage"),
    "stage1_epochs": ("--stage1-epochs", lambda c: c.strategy == "two-stage", "--strategy two-stage"),
    "c": ("--C", lambda c: c.uses_sklearn_head,
          "--strategy feature-extract with a scikit-learn head (--head softmax, logreg-ovr or linear-svm)"),
    "hidden": ("--hidden", lambda c: c.strategy == "feature-extract" and c.head == "mlp",
               "--strategy feature-extract --head mlp"),
    "weights": ("--weights", lambda c: c.strategy != "scratch" or str(c.weights).lower() in ("none", "random", "scratch"),
                "the strategies that start from pretrained weights (scratch starts from random initialisation)"),
    "dropout": ("--dropout", lambda c: not c.uses_sklearn_head,
                "the MLP head and the heads trained end to end (fine-tune, two-stage, scratch)"),
}  # fmt: skip


def _trains_network(c: TrainConfig) -> bool:
    return not c.uses_sklearn_head


def _trains_backbone(c: TrainConfig) -> bool:
    return c.strategy != "feature-extract"


# Settings every strategy accepts, so configs and compare can pass them uniformly: (flag, is it used).
GENERIC: dict[str, tuple[str, Callable[[TrainConfig], bool]]] = {
    "epochs": ("--epochs", _trains_network),
    "lr": ("--lr", _trains_network),
    "weight_decay": ("--weight-decay", _trains_network),
    "patience": ("--patience", _trains_network),
    "optimizer": ("--optimizer", _trains_backbone),
    "momentum": ("--momentum", _trains_backbone),
    "nesterov": ("--nesterov", _trains_backbone),
    "schedule": ("--schedule", _trains_backbone),
    "workers": ("--workers", _trains_backbone),
    "backbone_lr_mult": ("--backbone-lr-mult", lambda c: c.strategy in ("fine-tune", "two-stage")),
    "cache": ("--cache/--no-cache", lambda c: c.strategy == "feature-extract"),
}

_TYPES: dict[str, tuple[type, ...]] = {
    "backbone": (str,), "framework": (str, type(None)), "weights": (str, type(None)), "data": (str, type(None)),
    "val": (str, type(None)), "test": (str, type(None)), "val_split": (float, int), "test_split": (float, int),
    "image_size": (int, type(None)), "strategy": (str,), "head": (str,), "hidden": (list,), "dropout": (float, int),
    "c": (float, int, type(None)), "tap": (str, int, type(None)), "freeze": (str, int, type(None)),
    "unfreeze": (str, int), "stage1_epochs": (int,), "epochs": (int,), "batch_size": (int,), "lr": (float, int),
    "backbone_lr_mult": (float, int), "optimizer": (str,), "momentum": (float, int), "nesterov": (bool,),
    "weight_decay": (float, int), "schedule": (str,), "patience": (int,), "augment": (str,), "seed": (int,),
    "device": (str,), "workers": (int,), "strict": (bool,), "cache": (bool,), "tensorboard": (bool,), "name": (str, type(None)),
    "out_dir": (str,),
}  # fmt: skip


def _check_types(cfg: TrainConfig, source: str = "settings") -> None:
    """Values of the wrong type (a YAML list for --epochs, a string for --lr) are refused by name."""
    for key, types in _TYPES.items():
        value = getattr(cfg, key)
        wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if key == "hidden" and not wrong:
            wrong = not all(isinstance(h, int) and not isinstance(h, bool) for h in value)
        if wrong:
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise UsageError(f"{source}: {key} must be {want}, got {value!r}")
    for key in ("freeze", "tap", "unfreeze"):  # numbers in YAML are the same setting as their text
        value = getattr(cfg, key)
        if isinstance(value, int):
            setattr(cfg, key, str(value))


def _choice(flag: str, value: str, allowed: Any) -> None:
    if value not in allowed:
        import difflib

        close = difflib.get_close_matches(value, list(allowed), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"{flag} {value!r} is not known.{hint} Choose one of: {', '.join(allowed)}")
