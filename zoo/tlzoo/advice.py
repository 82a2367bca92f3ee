"""``tlzoo advise``: where your data sits in the size x similarity table, measured, and what to train.

On a small stratified sample, within a time budget, each backbone's pooled features are read at several
depths (taps) and a cross-validated linear probe scores them: how well the pretrained features separate
your classes says how similar the data is to the pretraining data, and which depth separates them best
says whether the late, ImageNet-specific features or earlier, generic ones carry the signal. The same
probe on the same architecture with random weights says how much pretraining helps at all, and the
probe's accuracy at half the sample says whether more images still help (fine-tuning has room). The
decision rules below turn that evidence into a strategy with its parameters; their track record against
full ``tlzoo compare`` runs is measured by ``benchmarks/advise.py``.
"""

from __future__ import annotations

import math
import shlex
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    import numpy as np

TAP_DEPTHS = (0.25, 0.5, 0.75)  # earlier taps, as fractions of the units; the final features are always read
MAX_PER_CLASS = 40  # the probe's sample: enough for a stable cross-validated accuracy, few enough for minutes
MIN_PER_CLASS = 4
# Decision thresholds (see benchmarks/advise.py for their track record).
HEADROOM_POINTS = 3.0  # a final-layer probe within this of 100 % leaves fine-tuning nothing to gain
# Fewer images per class than this: training the backbone for a few epochs overfits or diverges (the
# digits at 30 per class and the degraded photo crops at 40: fine-tuning every unit lost 50 points).
FINE_TUNE_MIN_PER_CLASS = 100
EARLIER_TAP_POINTS = 2.0  # an earlier tap must beat the final features by this much to be advised
PRETRAINING_GAIN_POINTS = 5.0  # pretrained features must beat random ones by this much to count as similar
LARGE_PER_CLASS = 1000  # the seed articles' "large": fine-tuning deep layers pays


@dataclass
class Probe:
    """One linear probe: the pooled features at one depth, scored by cross-validation."""

    tap: str  # "final" or the unit's name
    unit: int | None  # 1-based unit number, None for the final features
    depth: float  # position among the units, 0..1
    accuracy: float
    std: float


@dataclass
class Evidence:
    """What was measured for one backbone."""

    backbone: str
    weights: str
    image_size: int
    units: int
    probes: list[Probe]
    random_accuracy: float | None  # the final probe on randomly initialised weights
    half_sample_accuracy: float  # the final probe on half the sample: the learning curve's slope
    sample_per_class: int
    seconds: float

    @property
    def final(self) -> Probe:
        return next(p for p in self.probes if p.unit is None)

    @property
    def best(self) -> Probe:
        return max(self.probes, key=lambda p: (round(p.accuracy, 4), p.unit is None, p.depth))


@dataclass
class Advice:
    strategy: str
    params: dict[str, str]
    backbone: str
    size: str  # "small" or "large"
    similarity: str  # "similar" or "different"
    reasons: list[str]
    command: str
    evidence: list[Evidence]
    dataset: dict[str, Any]
    alternatives: list[str] = field(default_factory=list)  # compare strategy specs worth checking (--verify)
    seconds: float = 0.0

    @property
    def strategy_spec(self) -> str:
        return self.strategy + "".join(f":{k}={v}" for k, v in self.params.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "strategy_spec": self.strategy_spec, "params": self.params,
            "backbone": self.backbone, "command": self.command, "placement": {"size": self.size,
            "similarity": self.similarity}, "reasons": self.reasons, "alternatives": self.alternatives,
            "dataset": self.dataset, "evidence": [asdict(e) for e in self.evidence], "seconds": round(self.seconds, 2),
        }  # fmt: skip


def summarize(labels: list[str]) -> dict[str, Any]:
    """Images per class and balance, from the labels of the whole dataset."""
    import numpy as np

    counts = Counter(labels)
    per_class = sorted(counts.values())
    return {
        "images": len(labels), "classes": len(counts), "per_class": dict(sorted(counts.items())),
        "min_per_class": per_class[0], "median_per_class": float(np.median(per_class)),
        "imbalance": round(per_class[-1] / per_class[0], 2),
    }  # fmt: skip


def summarize_multilabel(samples: list[Any]) -> dict[str, Any]:
    """A multi-label set's :func:`summarize`: its "classes" are the labels, counted by their positives."""
    import numpy as np

    counts = Counter(name for s in samples for name in s.names)
    per_label = sorted(counts.values()) or [0]
    return {
        "images": len(samples), "classes": len(counts), "per_class": dict(sorted(counts.items())),
        "min_per_class": per_label[0], "median_per_class": float(np.median(per_label)),
        "imbalance": round(per_label[-1] / max(per_label[0], 1), 2), "multilabel": True,
    }  # fmt: skip


def _sample(labels: list[str] | np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """About ``per_class`` images of each class (a multi-label set: ``per_class`` times its labels, at random)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if np.ndim(labels) == 2:
        n = len(labels)
        return np.sort(rng.choice(n, size=min(n, per_class * max(np.shape(labels)[1], 1)), replace=False))
    chosen = []
    for label in sorted(set(labels)):
        where = np.flatnonzero(np.asarray(labels) == label)
        chosen.extend(rng.choice(where, size=min(per_class, len(where)), replace=False).tolist())
    return np.asarray(sorted(chosen))


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int, weighted: bool = False) -> tuple[float, float]:
    """Cross-validated accuracy of a standardized logistic regression on ``features``: mean and spread;
    ``weighted`` (``--balance`` weighs the classes): the regression's balanced class weights, and the balanced
    accuracy, the score the run's weighting aims at."""
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .heads import one_blas_thread

    if np.ndim(labels) == 2:
        return _probe_multilabel(features, labels, seed, weighted)
    folds = int(min(5, np.bincount(labels).min()))
    if folds < 2:
        raise UsageError("every class needs at least 2 images in the sample for a cross-validated probe")
    # With more features than images the L2-regularized solution lies in the span of the training images, so
    # a full PCA of each training fold first gives the same probe (fold for fold), several times faster.
    steps = [StandardScaler(), *([PCA()] if features.shape[1] > len(features) else []),
             LogisticRegression(C=0.5, max_iter=2000, class_weight="balanced" if weighted else None)]  # fmt: skip
    model = make_pipeline(*steps)
    with one_blas_thread():
        scores = cross_val_score(model, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                 scoring="balanced_accuracy" if weighted else None)  # fmt: skip
    return float(scores.mean()), float(scores.std())


def _probe_multilabel(features: np.ndarray, labels: np.ndarray, seed: int, weighted: bool) -> tuple[float, float]:
    """:func:`probe_accuracy` for a multi-label set: one logistic regression per label (positives weighed by
    negatives / positives when ``weighted``), scored by mean average precision over iteratively stratified folds."""
    import numpy as np
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from .heads import one_blas_thread
    from .multilabel import mean_average_precision

    y = np.asarray(labels, np.int64)
    present = y.sum(axis=0)
    folds = int(min(5, present[present > 0].min() if (present > 0).any() else 0))
    if folds < 2:
        raise UsageError("every label needs at least 2 images in the sample for a cross-validated probe")
    scores = []
    with one_blas_thread():
        for train, test in MultilabelStratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
            scaler = StandardScaler().fit(features[train])
            xs, xt = scaler.transform(features[train]), scaler.transform(features[test])
            proba = np.zeros((len(test), y.shape[1]))
            for k in range(y.shape[1]):
                column = y[train, k]
                if column.min() == column.max():
                    proba[:, k] = column[0]
                    continue
                pos = max(column.sum(), 1)
                weight = {0: 1.0, 1: float(np.clip((len(column) - pos) / pos, 1, 100))} if weighted else None
                model = LogisticRegression(C=0.5, max_iter=2000, class_weight=weight).fit(xs, column)
                proba[:, k] = model.predict_proba(xt)[:, 1]
            scores.append(mean_average_precision(y[test], proba))
    return float(np.mean(scores)), float(np.std(scores))


def _taps(units: int) -> list[int | None]:
    """0-based units at TAP_DEPTHS of the backbone (none for a backbone of under 4 units), then the final features."""
    earlier = sorted({max(0, min(units - 1, round(units * d) - 1)) for d in TAP_DEPTHS}) if units >= 4 else []
    return [*earlier, None]


def measure(backbone_name: str, samples: list[Any], *, budget_s: float, image_size: int | None, seed: int,
            weights: str, reporter: Any, weighted: bool = False) -> Evidence:  # fmt: skip
    """The evidence for one backbone on the scanned ``samples``, within ``budget_s`` seconds (the sample shrinks
    to fit)."""
    import numpy as np

    from .images.batches import load
    from .backbone import check_input_size, get_backbone
    from .registry import get_registry
    from .weights import named_weights, preflight, published

    t0 = time.perf_counter()
    multilabel = any(s.tags is not None for s in samples)
    labels: Any = [s.label for s in samples]
    if multilabel:
        from .images.sets import labelled

        labels = labelled(samples).labels
    spec = get_registry().resolve(backbone_name)
    weights = named_weights(backbone_name, weights)  # NAME.TAG: measured with those weights
    pretrained = weights.lower() not in ("none", "random", "scratch")
    size = check_input_size(spec, image_size, published(spec, weights if pretrained else None))
    if pretrained:
        preflight(spec, weights)
    backbone = get_backbone(spec, pretrained=weights if pretrained else False, input_size=size, seed=seed)
    taps = _taps(len(backbone.units))
    passes = len(taps) + (1 if pretrained else 0)
    n_classes = np.shape(labels)[1] if multilabel else len(set(labels))
    per_class = min(MAX_PER_CLASS, int(labels.sum(axis=0).max()) if multilabel else max(Counter(labels).values()))
    index = _sample(labels, per_class, seed)
    prep = spec.preprocessing_for(published(spec, weights if pretrained else None))
    probe = load([samples[i] for i in index[: min(16, len(index))]], size, whole_classes=False, prep=prep)
    t1 = time.perf_counter()
    backbone.extract_features(probe.images, batch_size=16)
    per_image = (time.perf_counter() - t1) / max(len(probe), 1)
    affordable = int(budget_s * 0.8 / max(per_image * passes, 1e-6) / max(n_classes, 1))
    if affordable < per_class:
        per_class = max(MIN_PER_CLASS, affordable)
        index = _sample(labels, per_class, seed)
        reporter.info(f"{spec.id}: the budget allows {per_class} images per class")
    loaded = load([samples[i] for i in index], size, whole_classes=False, prep=prep)
    y = loaded.labels
    probes = []
    with reporter.task(f"{spec.id}: probing {len(taps)} depths on {len(y)} images", len(taps)) as advance:
        for tap in taps:
            feats = backbone.extract_features(loaded.images, tap=tap, batch_size=32)
            acc, std = probe_accuracy(feats, y, seed, weighted)
            if tap is None:
                final_feats = feats
            name = "final" if tap is None else backbone.units[tap].name
            depth = 1.0 if tap is None else (tap + 1) / len(backbone.units)
            probes.append(Probe(name, None if tap is None else tap + 1, round(depth, 3), round(acc, 4), round(std, 4)))
            advance(1)
    half = _sample(y if multilabel else [str(v) for v in y], max(2, per_class // 2), seed + 1)
    half_acc, _ = probe_accuracy(final_feats[half], y[half], seed, weighted)
    random_acc = None
    if pretrained:
        scratch = get_backbone(spec, pretrained=False, input_size=size, seed=seed)
        random_acc, _ = probe_accuracy(scratch.extract_features(loaded.images, batch_size=32), y, seed, weighted)
    label = "random init" if not pretrained else (backbone.weights.tag if backbone.weights else weights)
    return Evidence(spec.id, label, size[0], len(backbone.units), probes,
                    None if random_acc is None else round(random_acc, 4), round(half_acc, 4),
                    # what the sample holds, not what it asked for (a multi-label set's: positives per label)
                    int(np.median(y.sum(axis=0) if multilabel else np.bincount(y)[np.bincount(y) > 0])),
                    round(time.perf_counter() - t0, 2))  # fmt: skip


def decide(dataset: dict[str, Any], evidence: list[Evidence]) -> tuple[str, dict[str, str], str, str, str, list[str], list[str]]:
    """The strategy, its parameters, the backbone, the placement and the reasons, from the evidence.

    Returns (strategy, params, backbone, size, similarity, reasons, alternatives).
    """
    chosen = max(evidence, key=lambda e: e.best.accuracy)
    final, best = chosen.final, chosen.best
    per_class = dataset["median_per_class"]
    k = dataset["classes"]
    pts = 100.0
    headroom = (1.0 - final.accuracy) * pts
    gain = None if chosen.random_accuracy is None else (final.accuracy - chosen.random_accuracy) * pts
    slope = (final.accuracy - chosen.half_sample_accuracy) * pts
    earlier_better = best.unit is not None and (best.accuracy - final.accuracy) * pts >= EARLIER_TAP_POINTS
    similar = not earlier_better and (gain is None or gain >= PRETRAINING_GAIN_POINTS) and headroom <= 15.0
    size = "large" if per_class >= LARGE_PER_CLASS else "small"
    multilabel = bool(dataset.get("multilabel"))
    reasons = [
        (f"{dataset['images']} images with {k} labels (median {per_class:g} positives per label, imbalance "
         f"{dataset['imbalance']:g}x): " if multilabel else
         f"{dataset['images']} images in {k} classes (median {per_class:g} per class, imbalance {dataset['imbalance']:g}x): ")
        + f"{size} data.",
        f"A linear probe on {chosen.backbone}'s final features scores {final.accuracy:.1%} "
        + (f"mean average precision (cross-validated on a sample with a median {chosen.sample_per_class} positives "
           f"per label)" if multilabel else
           f"(cross-validated on {chosen.sample_per_class} images per class, chance {1 / k:.0%})")
        + (f"; with random weights it scores {chosen.random_accuracy:.1%}, so pretraining is worth "
           f"{gain:+.1f} points" if gain is not None else "") + ".",
    ]  # fmt: skip
    if earlier_better:
        reasons.append(f"An earlier depth separates your classes better: unit {best.unit} ({best.tap}) scores "
                       f"{best.accuracy:.1%}, so the late, ImageNet-specific features fit your data less well.")  # fmt: skip
    reasons.append(f"Halving the sample costs the probe {slope:.1f} points: "
                   + ("more images still help, so training the backbone on all of yours has room." if slope >= 2
                      else "the features are close to saturated on this data."))  # fmt: skip
    half_units = max(1, chosen.units // 2)
    params: dict[str, str] = {}
    if headroom <= HEADROOM_POINTS and not earlier_better:
        strategy = "feature-extract"
        reasons.append(f"The frozen features already reach {final.accuracy:.1%}: fine-tuning has at most "
                       f"{headroom:.1f} points to gain and would cost far more; extract features.")  # fmt: skip
        alternatives = [f"fine-tune:freeze={half_units}"]
    elif per_class < FINE_TUNE_MIN_PER_CLASS:
        strategy = "feature-extract"
        if earlier_better:
            params["tap"] = str(best.unit)
            reasons.append(f"With under {FINE_TUNE_MIN_PER_CLASS} images per class, training the backbone would "
                           f"overfit: extract the earlier features (--tap {best.unit}).")  # fmt: skip
        else:
            reasons.append(f"With under {FINE_TUNE_MIN_PER_CLASS} images per class, training the backbone would "
                           f"overfit: extract features.")  # fmt: skip
        alternatives = [f"fine-tune:freeze={half_units}"]
    elif gain is not None and gain < 0 and size == "large":
        strategy = "scratch"
        reasons.append("Pretrained features do no better than random ones and there is plenty of data: "
                       "train from scratch.")  # fmt: skip
        alternatives = ["fine-tune:freeze=0"]
    elif size == "small" or similar:
        strategy, params = "fine-tune", {"freeze": str(half_units)}
        why = ("similar data with room to improve" if similar else
               "data unlike the pretraining data, but not enough of it to retrain the early units safely")  # fmt: skip
        reasons.append(f"With {why}, fine-tune the later half of the backbone (--freeze {half_units} of "
                       f"{chosen.units} units) at a lower learning rate.")  # fmt: skip
        alternatives = ["two-stage", "feature-extract" + (f":tap={best.unit}" if earlier_better else "")]
    else:
        strategy, params = "fine-tune", {"freeze": "0"}
        reasons.append("With plenty of data unlike the pretraining data, fine-tune every unit (--freeze 0): the "
                       "early features need to adapt too.")  # fmt: skip
        alternatives = ["two-stage", f"fine-tune:freeze={half_units}"]
    return strategy, params, chosen.backbone, size, "similar" if similar else "different", reasons, alternatives


DATA_OPTIONS = ("image_size", "seed", "test_split", "weights", "balance")  # compare's, declared once in TrainConfig


def data_settings() -> tuple[Any, ...]:
    """The data options advise shares with tlzoo compare: their declarations, with compare's defaults."""
    from .comparison import shared_settings

    return tuple(s for s in shared_settings() if s.name in DATA_OPTIONS)


def advise(data: Path, backbones: list[str], *, budget_minutes: float, image_size: int | None, seed: int,
           weights: str, test_split: float, reporter: Any, balance: str = "auto") -> Advice:  # fmt: skip
    from .images.folders import scan
    from .registry import split_tag

    if not backbones:
        raise UsageError("--backbones needs at least one backbone")
    if not budget_minutes > 0 or not math.isfinite(budget_minutes):
        raise UsageError(f"--budget must be a positive number of minutes, got {budget_minutes}")
    t0 = time.perf_counter()
    samples = scan(data)
    labels = [s.label for s in samples]
    multilabel = any(s.tags is not None for s in samples)
    dataset = summarize_multilabel(samples) if multilabel else summarize(labels)
    if dataset["classes"] < (1 if multilabel else 2):
        raise UsageError(f"{data} has {dataset['classes']} class; advice needs at least 2")
    if multilabel and dataset["min_per_class"] < 2:
        small = [c for c, n in dataset["per_class"].items() if n < 2]
        raise UsageError(f"label(s) {', '.join(small)} are on a single image; every label needs at least 2")
    if dataset["min_per_class"] < 2:
        small = [c for c, n in dataset["per_class"].items() if n < 2]
        raise UsageError(f"class(es) {', '.join(small)} have a single image; every class needs at least 2")
    share = budget_minutes * 60 / len(backbones)
    import numpy as np

    from .balance import decide as decide_balance

    if multilabel:
        from .images.sets import labelled

        matrix = labelled(samples).labels
        weighted = decide_balance(balance, matrix, matrix.shape[1]).mode != "none"
    else:
        classes = sorted(set(labels))
        weighted = decide_balance(balance, np.asarray([classes.index(x) for x in labels]), len(classes)).mode != "none"
    evidence = [measure(b, samples, budget_s=share, image_size=image_size, seed=seed, weights=weights,
                        reporter=reporter, weighted=weighted) for b in backbones]  # fmt: skip
    strategy, params, backbone, size, similarity, reasons, alternatives = decide(dataset, evidence)
    chosen = next(e for e in evidence if e.backbone == backbone)
    # a backbone named with its weights tag is advised with it (NAME.TAG), as it was measured
    tagged = {e.backbone: name for e, name in zip(evidence, backbones) if split_tag(name)[1] is not None}
    command = ["tlzoo", "train", "--data", str(data), "--backbone", tagged.get(backbone, backbone), "--strategy", strategy]
    for key, value in params.items():
        command += [f"--{key}", value]
    if image_size is not None:
        command += ["--image-size", str(chosen.image_size)]
    if weights != "auto":
        command += ["--weights", weights]
    if balance != "auto":
        command += ["--balance", balance]
    if test_split:
        command += ["--test-split", f"{test_split:g}"]
    if seed:
        command += ["--seed", str(seed)]
    return Advice(strategy, params, backbone, size, similarity, reasons, shlex.join(command), evidence, dataset,
                  alternatives, time.perf_counter() - t0)  # fmt: skip
