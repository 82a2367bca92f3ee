"""The resolved training configuration: what a run did, and how to run it again."""

from __future__ import annotations

import dataclasses
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
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "none")
AUGMENTATIONS = ("flip", "crop")


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
    name: str | None = None
    out_dir: str = "runs"

    def validate(self) -> None:
        _choice("--strategy", self.strategy, STRATEGIES)
        _choice("--head", self.head, HEADS)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--schedule", self.schedule, SCHEDULES)
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, got {value}")
        if self.c is not None and self.c <= 0:
            raise UsageError(f"--C must be positive, got {self.c}")
        if not self.lr > 0 or not self.backbone_lr_mult >= 0:  # written so that NaN fails too
            raise UsageError("--lr must be positive and --backbone-lr-mult not negative")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.strategy == "two-stage" and self.stage1_epochs < 1:
            raise UsageError("--stage1-epochs must be at least 1 for two-stage")
        if self.head != "softmax" and self.strategy != "feature-extract":
            raise UsageError(
                f"--head {self.head} applies to --strategy feature-extract; {self.strategy} trains a softmax head "
                f"end to end"
            )
        for part in self.augment_list():
            _choice("--augment", part, AUGMENTATIONS)
        if self.strategy == "feature-extract" and self.augment_list() and self.cache:
            raise UsageError(
                "augmentation cannot be combined with the feature cache: cached features are computed once from "
                "the unaugmented images. Use --no-augment, or --no-cache to recompute features every run"
            )

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
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise UsageError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        return cls(**data)


def _choice(flag: str, value: str, allowed: Any) -> None:
    if value not in allowed:
        import difflib

        close = difflib.get_close_matches(value, list(allowed), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"{flag} {value!r} is not known.{hint} Choose one of: {', '.join(allowed)}")
