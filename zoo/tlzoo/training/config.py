"""The resolved training configuration: what a run did, and how to run it again."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..settings import Setting
from ..specs import RESIZE_POLICIES

if TYPE_CHECKING:
    from ..images.split import Reading, Sources

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


SETTING = "tlzoo.setting"


def _setting(default: Any, help: str, group: str, **declared: Any) -> Any:
    """A TrainConfig field and its :class:`tlzoo.settings.Setting`: the one place a training setting is declared."""
    meta = {SETTING: (help, group, declared)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _sklearn_head(c: TrainConfig) -> bool:
    return c.uses_sklearn_head


def _trains_network(c: TrainConfig) -> bool:
    return not c.uses_sklearn_head


def _trains_backbone(c: TrainConfig) -> bool:
    return c.strategy != "feature-extract"


def _is(*strategies: str) -> Callable[[TrainConfig], bool]:
    return lambda c: c.strategy in strategies


def _starts_pretrained(c: TrainConfig) -> bool:
    return c.strategy != "scratch" or str(c.weights).lower() in ("none", "random", "scratch")


MODEL, DATA, STRATEGY, OPTIMIZATION, RUN = "Backbone", "Data", "Strategy and head", "Optimization", "Run"


@dataclass
class TrainConfig:
    """Every setting of a training run. Each field declares its option once: type (the annotation), default,
    range, help and where it applies; ``tlzoo train``'s options, config-file checks and compare's strategy
    parameters are generated from these declarations (:data:`TRAIN_SETTINGS`)."""

    backbone: str = _setting("mobilenet_v2", "Backbone name or id (tlzoo list-backbones).", MODEL, short="-b")
    framework: str | None = _setting(None, "The framework, when the short name is in several (tlzoo list-backbones).", MODEL)
    weights: str | None = _setting(
        "auto", "auto (ImageNet, preferring what is on disk), a tag, a file, or 'none'.", MODEL, fits=_starts_pretrained,
        applies="the strategies that start from pretrained weights (scratch starts from random initialisation)")
    data: str | None = _setting(
        None, "Image folder (one sub-folder per class) or a path,label CSV. Default: the embedded digits.", DATA, short="-d")
    val: str | None = _setting(None, "Validation folder (default: a stratified split of --data).", DATA)
    test: str | None = _setting(None, "Test folder (default: none, or --test-split).", DATA)
    val_split: float = _setting(0.2, "Share of --data held out for validation.", DATA, min=0, max=1, max_open=True)
    test_split: float = _setting(0.0, "Share of --data held out for testing.", DATA, min=0, max=1, max_open=True)
    image_size: int | None = _setting(None, "Resize images to this size (default: the backbone's).", DATA,
                                      min=1, max=MAX_IMAGE_SIZE)
    resize: str = _setting(
        "auto", "auto | squash | crop | pad: how an image reaches the input size (crop: keep the aspect, take the "
        "centre; pad: keep the aspect, fill with the mean colour; auto: the transform the weights were published "
        "with, tlzoo describe).", DATA, choices=("auto", *RESIZE_POLICIES), per_strategy=True)
    augment: str = _setting("auto", "auto | none | flip,crop (or flip+crop; auto: on for fine-tune, two-stage and scratch).", DATA,
                            per_strategy=True)
    strict: bool = _setting(False, "Stop on an unreadable image instead of skipping it.", DATA)
    workers: int = _setting(0, "Data-loading threads: those that gather fine-tune's, two-stage's and scratch's "
                            "batches from the decoded-pixel store ahead of the device (0: one per core on a GPU, "
                            "one on the CPU), and those that decode images (0: one per core the process may use).",
                            DATA, min=0)  # fmt: skip
    decoder: str = _setting("auto", "Who decodes JPEGs: auto (the framework's GPU decoder, nvJPEG for torch, when the "
                            "run computes on a CUDA device; else Pillow), cpu (Pillow always: its pixels, drafted), "
                            "gpu (the GPU decoder, refused where there is none).", DATA,
                            choices=("auto", "cpu", "gpu"), per_strategy=True)  # fmt: skip
    strategy: str = _setting("feature-extract", "feature-extract | fine-tune | two-stage | scratch (default: "
                             "feature-extract; fine-tune when --freeze is given).", STRATEGY, short="-s",
                             choices=tuple(STRATEGIES))
    freeze: str | None = _setting(
        None, "fine-tune: N | NAME | all | -K units frozen (tlzoo describe); selects fine-tune. Default: half.",
        STRATEGY, per_strategy=True, fits=_is("fine-tune"), applies="--strategy fine-tune (two-stage takes --unfreeze)")
    unfreeze: str = _setting("all", "two-stage: 'all' or the number of final units to unfreeze in stage 2.", STRATEGY,
                             per_strategy=True, fits=_is("two-stage"), applies="--strategy two-stage")
    stage1_epochs: int = _setting(3, "two-stage: epochs of the head-only stage.", STRATEGY, min=1, per_strategy=True,
                                  fits=_is("two-stage"), applies="--strategy two-stage")
    tap: str | None = _setting(None, "Use an earlier unit's pooled output (number or name) as the features.", STRATEGY,
                               per_strategy=True)
    feature_engine: str = _setting(
        "auto", "feature-extract: what runs the frozen backbone: auto (the fastest, measured on the run's own "
        "batches), framework (its own) or an installed engine (onnxruntime: a checked, cached ONNX export of the "
        "backbone; see tlzoo plugins).", STRATEGY,
        per_strategy=True, fits=_is("feature-extract"), applies="--strategy feature-extract")
    head: str = _setting("softmax", "softmax | logreg-ovr | linear-svm | mlp (feature-extract).", STRATEGY,
                         choices=tuple(HEADS), per_strategy=True)
    hidden: list[int] = _setting(
        [256], "mlp head: hidden layer sizes, comma separated.", STRATEGY, min=1, per_strategy=True,
        fits=lambda c: c.strategy == "feature-extract" and c.head == "mlp", applies="--strategy feature-extract --head mlp")
    dropout: float = _setting(0.2, "Dropout before each dense layer of the head.", STRATEGY, min=0, max=1, max_open=True,
                              per_strategy=True, fits=_trains_network,
                              applies="the MLP head and the heads trained end to end (fine-tune, two-stage, scratch)")
    c: float | None = _setting(
        None, "Inverse regularization of the scikit-learn heads (default: chosen on validation data).", STRATEGY,
        flag="--C", min=0, min_open=True, per_strategy=True, fits=_sklearn_head,
        applies="--strategy feature-extract with a scikit-learn head (--head softmax, logreg-ovr or linear-svm)")
    balance: str = _setting(
        "auto", "Imbalanced classes: auto (weights when the largest class has 3x the images of the smallest, else "
        "none), none, weights (the loss weighted by class, n / (classes x n_class); the scikit-learn heads' "
        "class_weight), sampler (each epoch drawn class-balanced, with replacement; not the scikit-learn heads).",
        STRATEGY, choices=("auto", "none", "weights", "sampler"))
    calibrate: str = _setting(
        "auto", "Fit one temperature on the validation split so that the confidences mean what they say (multi-label: "
        "Platt scaling per label): auto (when it holds at least 50 images), on, off. The predicted class never "
        "changes.", STRATEGY, choices=("auto", "on", "off"))
    threshold: float | None = _setting(
        None, "Multi-label: one probability threshold for every label (default: each label's own, chosen on the "
        "validation split for its best F1).", STRATEGY, min=0, max=1, min_open=True, max_open=True)
    epochs: int = _setting(10, "Epochs (two-stage: of stage 2; mlp head: max epochs).", OPTIMIZATION, min=1,
                           per_strategy=True, used=_trains_network)
    batch_size: int | str = _setting(
        32, "Images per batch, or auto: on a GPU the largest training batch that fits 60 % of its free memory (the "
        "learning rate scaled by batch/32 after one epoch of warm-up); 32 on the CPU. feature-extract on a CUDA "
        "device computes its features in batches of 256 unless a number is given here.",
        OPTIMIZATION, min=1, per_strategy=True, words=("auto",))
    lr: float = _setting(1e-3, "Learning rate of the head.", OPTIMIZATION, min=0, min_open=True, per_strategy=True,
                         used=_trains_network)
    backbone_lr_mult: float = _setting(0.1, "Backbone learning rate = lr x this.", OPTIMIZATION, min=0,
                                       per_strategy=True, used=_is("fine-tune", "two-stage"))
    optimizer: str = _setting("adamw", "sgd | adam | adamw", OPTIMIZATION, choices=OPTIMIZERS, per_strategy=True,
                              used=_trains_backbone)
    momentum: float = _setting(0.9, "SGD momentum.", OPTIMIZATION, min=0, max=1, max_open=True, per_strategy=True,
                               used=_trains_backbone)
    nesterov: bool = _setting(True, "Nesterov momentum (sgd).", OPTIMIZATION, per_strategy=True, used=_trains_backbone)
    weight_decay: float = _setting(1e-4, "Weight decay (decoupled for adamw).", OPTIMIZATION, min=0, per_strategy=True,
                                   used=_trains_network)
    schedule: str = _setting("cosine", "cosine | step | none", OPTIMIZATION, choices=SCHEDULES, per_strategy=True,
                             used=_trains_backbone)
    patience: int = _setting(5, "Early stopping after this many epochs without a better val loss (0: off).",
                             OPTIMIZATION, min=0, per_strategy=True, used=_trains_network)
    seed: int = _setting(0, "Seed for splits, initialisation and shuffling.", RUN)
    device: str = _setting("auto", "auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:1 | mps | 0,1 (one process "
                           "per GPU where the framework trains that way)", RUN)
    threads: int | None = _setting(None, "CPU threads for the framework's operations in this process (default: the "
                                   "framework's own choice, one per core).", RUN, min=1)
    compile: str = _setting("auto", "Compile the training step (torch.compile; XLA for Keras): auto (on a GPU, "
                            "where it pays), on, off.", RUN, choices=("auto", "on", "off"), used=_trains_network)
    cache: bool = _setting(True, "Cache bottleneck features (feature-extract).", RUN, used=_is("feature-extract"))
    tensorboard: bool = _setting(False, "Also log every epoch for TensorBoard (RUN/tensorboard; needs the tensorboard "
                                 "package).", RUN)
    name: str | None = _setting(None, "Run name (default: BACKBONE-STRATEGY).", RUN)
    out_dir: str = _setting("runs", "Where run directories go.", RUN)

    def validate(self) -> None:
        """Check every value's type and range, then how they combine, before any image is decoded or model built."""
        for s in TRAIN_SETTINGS:
            setattr(self, s.name, s.check(getattr(self, s.name)))
        if not self.val and self.val_split <= 0:
            raise UsageError("--val-split must be above 0 unless a --val folder is given: training needs validation images")
        if self.val_split + self.test_split >= 1:
            raise UsageError(f"--val-split {self.val_split} and --test-split {self.test_split} leave no training images")
        if self.name is not None:
            check_run_name(self.name)
        if not re.fullmatch(r"auto|cpu|mps|gpu|cuda(:\d+)?|\d+(,\d+)*", self.device.strip().lower()):
            raise UsageError(f"--device {self.device!r} is not a device: use auto, cpu, cuda, cuda:N, N or mps")
        for part in self.augment_list():
            if part not in AUGMENTATIONS:
                raise UsageError(f"--augment {part!r} is not known; use auto, none, or some of: {', '.join(AUGMENTATIONS)}")
        if self.threshold is not None and not 0.0 < float(self.threshold) < 1.0:
            raise UsageError(f"--threshold must be between 0 and 1 (exclusive), got {self.threshold:g}")
        if self.balance == "sampler" and self.uses_sklearn_head:
            raise UsageError(f"--balance sampler: the {self.head} head is fitted by scikit-learn on all the features "
                             f"at once, with no batches to draw; use --balance weights (its class_weight)")  # fmt: skip
        if self.tensorboard:
            from .tensorboard import check_available

            check_available()
        from ..feature_engines import check as check_feature_engine  # installed engines: the plugin registry

        check_feature_engine(self.feature_engine)

    @property
    def batch(self) -> int:
        """``--batch-size`` as a number: ``auto`` is resolved when training starts (see
        :mod:`tlzoo.training.autobatch`), before anything batches images."""
        if isinstance(self.batch_size, str):
            raise AssertionError("--batch-size auto is resolved before training starts")
        return self.batch_size

    @property
    def uses_sklearn_head(self) -> bool:
        return self.strategy == "feature-extract" and self.head in SKLEARN_HEADS

    def sources(self) -> Sources:
        """Where the images are and how they are split, for the input path (:mod:`tlzoo.images.split`); the runs'
        output folder is never data, even inside ``--data``."""
        from ..images.split import Sources

        return Sources(data=self.data, val=self.val, test=self.test, val_split=self.val_split,
                       test_split=self.test_split, seed=self.seed, exclude=(Path(self.out_dir).expanduser(),))  # fmt: skip

    def reading(self) -> Reading:
        """How the input path reads the images: ``--strict``, ``--workers`` and whether the store is used."""
        from ..images.split import Reading

        return Reading(strict=self.strict, threads=self.workers or None, store=self.cache)

    def apply_given(self, given: Collection[str]) -> list[str]:
        """Apply the rule for options given explicitly (on the command line, in a config file or to the API).

        ``--freeze`` without ``--strategy`` selects fine-tune. Any other strategy-specific option given with a
        strategy it does not fit is refused, naming both. Returns notes for the run's log.
        """
        notes = []
        if "freeze" in given and "strategy" not in given and self.freeze is not None:
            self.strategy = "fine-tune"
            notes.append(f"--freeze {self.freeze} selects --strategy fine-tune")
        for s in TRAIN_SETTINGS:
            if s.name in given and s.fits is not None and getattr(self, s.name) is not None and not s.fits(self):
                raise UsageError(f"{s.option} does not fit {self.describe_choice()}: it applies to {s.applies}")
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
        given = cfg._tag_to_weights(given)
        notes = cfg.apply_given(given)
        cfg.validate()
        return cfg, notes

    def _tag_to_weights(self, given: Collection[str]) -> set[str]:
        """``--backbone NAME.TAG`` gives the weights: the same as ``--backbone NAME --weights TAG`` (refused beside
        a ``--weights`` that names other weights)."""
        from ..registry import split_tag
        from ..weights import named_weights

        name, tag = split_tag(self.backbone)
        if tag is None:
            return set(given)
        self.weights = named_weights(self.backbone, str(self.weights or "") if "weights" in given else "auto")
        self.backbone = name
        return {*given, "weights"}

    def unused(self, given: Collection[str]) -> list[str]:
        """The generic options given that this strategy and head do not use (accepted, and said)."""
        return [s.option for s in TRAIN_SETTINGS if s.name in given and s.used is not None and not s.used(self)]

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
        # "+" as well as ",": a compare strategy string needs it (there a comma starts a sweep)
        return [a.strip() for a in value.replace("+", ",").split(",") if a.strip()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        import yaml

        from ..files import atomic_write_text

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
        settings = {s.name: s for s in TRAIN_SETTINGS}
        unknown = sorted(str(k) for k in set(data) - set(settings))
        if unknown:
            raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        checked = {}
        for key, value in data.items():
            try:
                checked[key] = settings[key].check(value)
            except UsageError as exc:
                raise UsageError(f"{path}: {key}: {exc}") from None
        cfg = cls(**checked)
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


def _declared_settings() -> tuple[Setting, ...]:
    """TrainConfig's fields as Settings: the type from the annotation, the rest from the field's declaration."""
    hints = typing.get_type_hints(TrainConfig)
    settings = []
    for f in dataclasses.fields(TrainConfig):
        help_text, group, declared = f.metadata[SETTING]
        hint = hints[f.name]
        nullable = type(None) in typing.get_args(hint)
        # A number that also takes words (int | str, declared with words=...) is a number setting.
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = [a for a in typing.get_args(hint) if a is not type(None) and not (declared.get("words") and a is str)]
        base = args[0] if union else hint
        kind = "ints" if typing.get_origin(base) is list else base.__name__
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        settings.append(Setting(f.name, kind, default, help_text, group=group, nullable=nullable, **declared))
    return tuple(settings)


TRAIN_SETTINGS: tuple[Setting, ...] = _declared_settings()
"""Every training setting, in the order ``tlzoo train --help`` lists them."""
SETTINGS_BY_NAME = {s.name: s for s in TRAIN_SETTINGS}
