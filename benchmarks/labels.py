"""Labels as they come, on scikit-learn's handwritten digits with MobileNetV2's real ImageNet weights (offline).

    python benchmarks/labels.py [--seeds 3] [--image-size 64] [--epochs 3] [--multilabel-sizes 32,64]
                                [--parts single-label,multi-label]

``--parts multi-label`` measures the multi-label runs alone and keeps the single-label parts (imbalance and
calibration) of the last results file, saying so in it (``carried``): they take most of the time, and a change
to multi-label code leaves them as they were.

Three questions, each a ratio or difference measured within one run, means over ``--seeds`` seeds:

1. **Imbalance.** A balanced test split is held out (60 images a digit); of the rest, digits 0-4 keep every image
   and digits 5-9 are cut to a fifteenth (15:1). ``--balance auto`` (which weighs the loss here) against
   ``--balance none``, for feature extraction and fine-tuning: balanced accuracy on the test split. Goal: auto >=
   none + 2 points. And on the balanced set, auto leaves the run as it was (the same decision, the same scores).
2. **Multi-label.** Each digit carries the tags it has: four frequent ones, ``even``, ``big`` (5 and over),
   ``round`` (a closed loop: 0, 6, 8, 9) and ``prime`` (2, 3, 5, 7), and four rare ones (a tenth of the images
   each), the digits most often confused with one another: ``three``, ``five``, ``eight``, ``nine``. Mean average
   precision per strategy, and micro F1 on the test split at the run's per-label thresholds against a fixed 0.5
   (the same model scored both ways), at each of ``--multilabel-sizes`` (at 32 px the rare tags are hard, at 64
   px every tag is easy). Goal: the thresholds beat 0.5.
3. **Calibration.** Expected calibration error on the test split before and after calibration, single-label
   digits, feature extraction and fine-tuning (for tlzoo's default 10 epochs), every digit a test image once
   (5 stratified folds, their test predictions pooled: 1,797 images), beside the ECE a perfectly calibrated
   model would still show on that many test images (:func:`ece_floor`). Goal: after <= 0.5x before, or <= 0.02.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
from _common import RESULTS, import_offline_weights, write

TAGS = {"even": {0, 2, 4, 6, 8}, "big": {5, 6, 7, 8, 9}, "round": {0, 6, 8, 9}, "prime": {2, 3, 5, 7},
        "three": {3}, "five": {5}, "eight": {8}, "nine": {9}}
TEST_PER_DIGIT = 60


def digits_files() -> list[tuple[str, int]]:
    from tlzoo.images.datasets import default_data_root, ensure_digits
    from tlzoo.images.folders import scan

    return [(str(s.path), int(s.label)) for s in scan(ensure_digits(default_data_root()))]


def write_csv(path: Path, rows: list[tuple[str, str]], column: str) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", column])
        writer.writerows(rows)
    return path


def imbalanced_sets(files: list[tuple[str, int]], seed: int, root: Path) -> dict[str, Path]:
    """A balanced test CSV, and the rest twice: balanced, and with digits 5-9 cut to a fifteenth."""
    rng = np.random.default_rng(seed)
    by_digit: dict[int, list[str]] = {}
    for path, digit in files:
        by_digit.setdefault(digit, []).append(path)
    test, balanced, cut = [], [], []
    for digit, paths in sorted(by_digit.items()):
        order = [paths[i] for i in rng.permutation(len(paths))]
        test += [(p, str(digit)) for p in order[:TEST_PER_DIGIT]]
        rest = [(p, str(digit)) for p in order[TEST_PER_DIGIT:]]
        balanced += rest
        cut += rest if digit < 5 else rest[: max(2, len(rest) // 15)]
    return {"test": write_csv(root / "test.csv", test, "label"), "balanced": write_csv(root / "balanced.csv", balanced, "label"),
            "imbalanced": write_csv(root / "imbalanced.csv", cut, "label")}  # fmt: skip


def multilabel_set(files: list[tuple[str, int]], root: Path) -> Path:
    rows = [(path, ";".join(sorted(tag for tag, digits in TAGS.items() if digit in digits))) for path, digit in files]
    return write_csv(root / "tags.csv", rows, "labels")


def ece_floor(table: dict[str, list[float]], draws: int = 2000, seed: int = 0) -> float:
    """The expected calibration error a perfectly calibrated model would still show on this test split: each
    bin's images right with probability its mean confidence, the ECE of such draws averaged. An ECE near it is
    as low as this many test images can tell."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(table["count"], np.int64)
    confidence = np.asarray(table["confidence"])
    right = rng.binomial(counts[None, :], confidence[None, :], size=(draws, len(counts)))
    gaps = np.abs(right / np.maximum(counts, 1) - confidence) * counts
    return float(np.mean(gaps.sum(axis=1) / max(counts.sum(), 1)))


CALIBRATION_EPOCHS = 10  # tlzoo's default --epochs


def five_folds(files: list[tuple[str, int]], seed: int, root: Path) -> list[tuple[Path, Path]]:
    """(training CSV, test CSV) of each of 5 stratified folds of every digit."""
    from sklearn.model_selection import StratifiedKFold

    digits = np.asarray([d for _, d in files])
    out = []
    for fold, (rest, held) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(digits, digits)):
        out.append((write_csv(root / f"fold{fold}-train.csv", [(files[i][0], str(files[i][1])) for i in rest], "label"),
                    write_csv(root / f"fold{fold}-test.csv", [(files[i][0], str(files[i][1])) for i in held], "label")))
    return out


def pooled(tables: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Reliability tables of several test splits as one (the same bins): the table of their pooled predictions."""
    counts = np.sum([t["count"] for t in tables], axis=0)
    conf = np.sum([np.asarray(t["confidence"]) * t["count"] for t in tables], axis=0) / np.maximum(counts, 1)
    acc = np.sum([np.asarray(t["accuracy"]) * t["count"] for t in tables], axis=0) / np.maximum(counts, 1)
    return {"lower": tables[0]["lower"], "count": counts.tolist(), "confidence": conf.tolist(), "accuracy": acc.tolist()}


def _add_calibration(into: dict[str, list[float]], runs: list[dict[str, Any]]) -> None:
    """One seed's calibration: the ECE before and after of the runs' test splits pooled, and its floor."""
    from tlzoo.calibration import table_error

    before = pooled([m["reliability"]["before"] for m in runs])
    after = pooled([m["reliability"].get("after", m["reliability"]["before"]) for m in runs])
    into["before"].append(table_error(before))
    into["after"].append(table_error(after))
    into["floor"].append(ece_floor(after))
    into["temperature"].append(float(np.mean([m["temperature"] for m in runs])))
    into["images"].append(int(sum(before["count"])))


def train(**kwargs: Any) -> Any:
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.run import train as run

    return run(TrainConfig(**kwargs), exist_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--multilabel-sizes", default="32,64")
    parser.add_argument("--parts", default="single-label,multi-label")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"single-label", "multi-label"}:
        raise SystemExit(f"--parts takes single-label and multi-label, got {args.parts}")
    sizes = [int(v) for v in args.multilabel_sizes.split(",")]

    from tlzoo.runs.evaluation import evaluate_model

    tmp = Path(tempfile.mkdtemp(prefix="tlzoo-labels-"))
    os.environ.setdefault("TLZOO_CACHE", str(tmp / "cache"))
    import_offline_weights()
    files = digits_files()
    common = dict(backbone="mobilenet_v2", image_size=args.image_size, out_dir=str(tmp / "runs"))
    fine = dict(strategy="fine-tune", epochs=args.epochs, augment="none", freeze="8")
    strategies = {"feature-extract": {}, "fine-tune": fine}
    t0 = time.perf_counter()

    imbalance: dict[str, Any] = {s: {"auto": [], "none": []} for s in strategies}
    balanced_same: list[bool] = []
    calibration: dict[str, dict[str, list[float]]] = {
        s: {"before": [], "after": [], "floor": [], "temperature": [], "images": []} for s in strategies}
    for seed in range(args.seeds if "single-label" in parts else 0):
        sets = imbalanced_sets(files, seed, tmp / f"seed{seed}")
        for strategy, extra in strategies.items():
            for mode in ("none", "auto"):  # interleaved: the two runs of a pair back to back
                result = train(data=str(sets["imbalanced"]), test=str(sets["test"]), balance=mode, seed=seed,
                               name=f"imb-{strategy}-{mode}-{seed}", **common, **extra)  # fmt: skip
                m = result.metrics
                imbalance[strategy][mode].append({"balanced_accuracy": m["balanced_accuracy"], "accuracy": m["accuracy"],
                                                  "mode": m["balance"]["mode"], "ratio": m["balance"]["ratio"]})  # fmt: skip
                print(f"imbalanced {strategy} seed {seed} --balance {mode}: balanced accuracy "
                      f"{m['balanced_accuracy']:.4f} ({m['balance']['mode']})", flush=True)
            # the balanced set: auto decides none, and the calibration (auto: >= 50 validation images) is measured
            result = train(data=str(sets["balanced"]), test=str(sets["test"]), seed=seed,
                           name=f"bal-{strategy}-{seed}", **common, **extra)  # fmt: skip
            m = result.metrics
            balanced_same.append(m["balance"]["mode"] == "none")
            print(f"balanced {strategy} seed {seed}: --balance auto -> {m['balance']['mode']}; ECE "
                  f"{m['ece_before_calibration']:.4f} -> {m['ece']:.4f}", flush=True)
        # calibration as users train (fine-tuning for tlzoo's default epochs), scored on every digit once: 5
        # stratified folds, each a test split, their predictions pooled (1,797 test images: a lower floor)
        for strategy, extra in strategies.items():
            folds = []
            for fold, (rest, held) in enumerate(five_folds(files, seed, tmp / f"seed{seed}")):
                folds.append(train(data=str(rest), test=str(held), seed=seed, name=f"cal-{strategy}-{seed}-{fold}",
                                   **common, **{**extra, **({"epochs": CALIBRATION_EPOCHS} if extra else {})}).metrics)
            _add_calibration(calibration[strategy], folds)
        for strategy in strategies:
            c = calibration[strategy]
            print(f"calibration {strategy} seed {seed}: ECE {c['before'][-1]:.4f} -> {c['after'][-1]:.4f} (floor "
                  f"{c['floor'][-1]:.4f}, {c['images'][-1]} test images)", flush=True)

    tags = multilabel_set(files, tmp)
    multi: dict[str, dict[str, list[float]]] = {}
    for size in sizes if "multi-label" in parts else []:
        for strategy, extra in strategies.items():
            key = f"{strategy} {size} px"
            multi[key] = {"mean_average_precision": [], "micro_f1_thresholds": [], "micro_f1_half": [],
                          "macro_f1_thresholds": [], "macro_f1_half": []}
            for seed in range(args.seeds):
                result = train(data=str(tags), test_split=0.2, seed=seed, name=f"tags-{strategy}-{size}-{seed}",
                               **{**common, "image_size": size}, **extra)  # fmt: skip
                m = result.metrics
                # the same model on its own test split at a fixed 0.5: the rows split.csv recorded
                import csv

                with open(result.run_dir / "split.csv", newline="") as f:
                    test_rows = [(r["path"], r["labels"]) for r in csv.DictReader(f) if r["subset"] == "test"]
                listed = write_csv(tmp / f"tags-test-{strategy}-{size}-{seed}.csv", test_rows, "labels")
                half = evaluate_model(result.run_dir, listed, threshold=0.5, device="cpu")
                multi[key]["mean_average_precision"].append(m["mean_average_precision"])
                multi[key]["micro_f1_thresholds"].append(m["micro_f1"])
                multi[key]["micro_f1_half"].append(half["micro_f1"])
                multi[key]["macro_f1_thresholds"].append(m["macro_f1"])
                multi[key]["macro_f1_half"].append(half["macro_f1"])
                print(f"multi-label {key} seed {seed}: mAP {m['mean_average_precision']:.4f}, micro F1 "
                      f"{m['micro_f1']:.4f} (thresholds) vs {half['micro_f1']:.4f} (0.5)", flush=True)

    summary: dict[str, Any] = {"imbalance": {}, "multilabel": {}, "calibration": {}}
    for strategy in strategies if "single-label" in parts else []:
        auto = mean(r["balanced_accuracy"] for r in imbalance[strategy]["auto"])
        none = mean(r["balanced_accuracy"] for r in imbalance[strategy]["none"])
        summary["imbalance"][strategy] = {"auto": round(auto, 4), "none": round(none, 4),
                                          "gain_points": round(100 * (auto - none), 2),
                                          "goal_met": 100 * (auto - none) >= 2.0,
                                          "auto_chose": sorted({r["mode"] for r in imbalance[strategy]["auto"]})}  # fmt: skip
        before, after = mean(calibration[strategy]["before"]), mean(calibration[strategy]["after"])
        summary["calibration"][strategy] = {"ece_before": round(before, 4), "ece_after": round(after, 4),
                                            "test_images": calibration[strategy]["images"][0],
                                            "ece_floor": round(mean(calibration[strategy]["floor"]), 4),
                                            "temperature": round(mean(calibration[strategy]["temperature"]), 3),
                                            "ratio": round(after / before, 3) if before else None,
                                            "goal_met": after <= 0.5 * before or after <= 0.02}  # fmt: skip
    for key, ml in multi.items():
        summary["multilabel"][key] = {k: round(mean(v), 4) for k, v in ml.items()}
        summary["multilabel"][key]["gain_points"] = round(100 * (mean(ml["micro_f1_thresholds"]) - mean(ml["micro_f1_half"])), 2)
        summary["multilabel"][key]["goal_met"] = mean(ml["micro_f1_thresholds"]) > mean(ml["micro_f1_half"])
    summary["balanced_set_auto_is_none"] = all(balanced_same)
    carried: dict[str, Any] = {}
    runs = {"imbalance_runs": imbalance, "multilabel_runs": multi, "calibration_runs": calibration}
    previous = RESULTS / "labels.json"
    for part, keys in (("single-label", ("imbalance", "calibration", "balanced_set_auto_is_none")),
                       ("multi-label", ("multilabel",))):  # fmt: skip
        if part in parts:
            continue
        if not previous.is_file():
            raise SystemExit(f"--parts leaves out {part}, and there is no {previous} to keep it from")
        old = json.loads(previous.read_text())
        for key in keys:
            summary[key] = old["summary"][key]
            if f"{key}_runs" in old:
                runs[f"{key}_runs"] = old[f"{key}_runs"]
        carried[part] = {"date": old["date"], "commit": old.get("commit", "not recorded")}
    print(summary)
    write("labels", {"commit": _commit(), **({"carried": carried} if carried else {}), "seeds": args.seeds, "image_size": args.image_size, "epochs": args.epochs, "multilabel_sizes": sizes,
                     "calibration_epochs": CALIBRATION_EPOCHS,
                     "test_per_digit": TEST_PER_DIGIT,
                     "wall_s": round(time.perf_counter() - t0, 1), "summary": summary, **runs})  # fmt: skip


def _commit() -> str:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)  # fmt: skip
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
