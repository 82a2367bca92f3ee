"""``MODEL_CARD.md`` in every run directory: what the model is, what it was trained on, how good it is and
where it falls short, in the spirit of Hugging Face's model cards. Each export appends its own checks."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

CARD = "MODEL_CARD.md"
SMALL_EVAL = 100  # below this many evaluation images, one image moves accuracy by a point or more


def write(run_dir: Path, *, config: dict[str, Any], spec: Any, weights: Any, metrics: dict[str, Any],
          counts: dict[str, dict[str, int]], skipped: int, unused: list[str],
          images: dict[str, int] | None = None) -> None:  # fmt: skip
    from ..files import atomic_write_text

    atomic_write_text(Path(run_dir) / CARD, render(config=config, spec=spec, weights=weights, metrics=metrics,
                                                   counts=counts, skipped=skipped, unused=unused, images=images))  # fmt: skip


def render(*, config: dict[str, Any], spec: Any, weights: Any, metrics: dict[str, Any],
           counts: dict[str, dict[str, int]], skipped: int, unused: list[str],
           images: dict[str, int] | None = None) -> str:  # fmt: skip
    """The card; ``images``: each split's images where ``counts`` (a multi-label set's positives) do not add up to them."""
    multilabel = "per_label" in metrics
    classes = list(metrics["per_label" if multilabel else "per_class"])
    split = metrics["split"]
    n_eval = int(metrics["n"])
    weights_line = (f"`{weights.tag}` ({spec.default_weights.dataset if spec.default_weights else 'ImageNet'}"
                    f"{', verified against its published hash' if weights.verified else ', no published hash'})"
                    if weights is not None else "none: random initialisation")  # fmt: skip
    lines = [
        f"# {spec.id} {config['strategy']} on {Path(str(config['data'])).name}", "",
        (f"A multi-label image classifier ({len(classes)} labels, any number an image) trained with tlzoo on "
         if multilabel else f"A {len(classes)}-class image classifier trained with tlzoo on ")
        + f"{_dt.date.today().isoformat()}.", "",
        "## Model", "",
        f"- Backbone: `{spec.id}` ({spec.family or spec.name}; {spec.num_params:,} parameters, "
        f"{spec.feature_dim} features); licence: {spec.license or 'see the source'}; source: {spec.source or '-'}",
        f"- Pretrained weights: {weights_line}",
        f"- Strategy: `{config['strategy']}`" + _strategy_detail(config, metrics),
        f"- Input: {config['image_size']} px RGB, preprocessing `{spec.preprocessing.mode}` "
        f"(carried in the run and in every export)",
        "",
        "## Data", "",
        f"- Source: `{config['data']}`",
        ("- Split (iterative stratification, seed {seed}; images): " if multilabel else
         "- Split (stratified, seed {seed}): ").format(seed=config["seed"])
        + ", ".join(f"{name} {(images or {}).get(name, sum(c.values()))}" for name, c in counts.items() if c),
        "",
        f"| {'label (positives)' if multilabel else 'class'} | " + " | ".join(name for name, c in counts.items() if c) + " |",
        "|---|" + "---|" * sum(1 for c in counts.values() if c),
    ]
    for cls in classes:
        lines.append(f"| {cls} | " + " | ".join(str(c.get(cls, 0)) for c in counts.values() if c) + " |")
    if multilabel:
        lines += ["", "## Results", "", _multilabel_results(metrics, split, n_eval),
                  *([""] + [calibration_line(metrics)] if "ece" in metrics else []), "",
                  "| label | AP | precision | recall | F1 | threshold | support |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in metrics["per_label"].items():
            ap = f"{row['ap']:.3f}" if row["ap"] is not None else "-"
            lines.append(f"| {name} | {ap} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
                         f"{row['threshold']:.3f} | {row['support']} |")  # fmt: skip
    else:
        lines += _single_label_results(metrics, split, n_eval)
    lines += ["", "## Settings", "", "```yaml", *_yaml(config), "```", "", "## Known limits", ""]
    lines += [f"- {limit}" for limit in limits(config=config, weights=weights, metrics=metrics, counts=counts,
                                                skipped=skipped, unused=unused)]  # fmt: skip
    lines += ["", "## Exports", "", "_None yet: `tlzoo export onnx RUN` appends its checks here._", ""]
    return "\n".join(lines)


def _multilabel_results(metrics: dict[str, Any], split: str, n_eval: int) -> str:
    return (f"On the {split} split ({n_eval} images): mean average precision **{metrics['mean_average_precision']:.4f}**, "
            f"micro F1 {metrics['micro_f1']:.4f}, macro F1 {metrics['macro_f1']:.4f}, subset accuracy "
            f"{metrics['subset_accuracy']:.4f} (every label of an image right), Hamming loss {metrics['hamming_loss']:.4f} "
            f"(the share of image-label pairs wrong), log loss {metrics['log_loss']:.4f}; labels predicted at the "
            f"thresholds below.")  # fmt: skip


def _single_label_results(metrics: dict[str, Any], split: str, n_eval: int) -> list[str]:
    lines = [
        "", "## Results", "",
        f"On the {split} split ({n_eval} images): accuracy **{metrics['accuracy']:.4f}**, "
        f"macro F1 {metrics['macro_f1']:.4f}, log loss {metrics['log_loss']:.4f}"
        + "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items() if k.startswith("top"))
        + (f", balanced accuracy {metrics['balanced_accuracy']:.4f}" if "balanced_accuracy" in metrics else "") + ".",
        *([""] + [calibration_line(metrics)] if "ece" in metrics else []),
        "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|",
    ]
    for cls, row in metrics["per_class"].items():
        lines.append(f"| {cls} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    return lines


def calibration_line(metrics: dict[str, Any]) -> str:
    """What the confidences are worth: the calibration error, and the temperature when one was fitted."""
    if "platt" in metrics:
        return (f"Probabilities calibrated by Platt scaling, one (a, b) per label fitted on the validation split: "
                f"mean expected calibration error {metrics['ece_before_calibration']:.4f} -> {metrics['ece']:.4f}, "
                f"log loss {metrics['log_loss_before_calibration']:.4f} -> {metrics['log_loss']:.4f} "
                f"(`reliability.png`).")  # fmt: skip
    if "ece_before_calibration" in metrics:
        return (f"Confidences calibrated by temperature scaling (T = {metrics['temperature']:.3f}, fitted on the "
                f"validation split): expected calibration error {metrics['ece_before_calibration']:.4f} -> "
                f"{metrics['ece']:.4f}, log loss {metrics['log_loss_before_calibration']:.4f} -> "
                f"{metrics['log_loss']:.4f} (`reliability.png`).")  # fmt: skip
    return (f"Confidences not calibrated ({metrics.get('calibration', 'off')}): expected calibration error "
            f"{metrics['ece']:.4f} (`reliability.png`).")


def limits(*, config: dict[str, Any], weights: Any, metrics: dict[str, Any], counts: dict[str, dict[str, int]],
           skipped: int, unused: list[str]) -> list[str]:  # fmt: skip
    out = []
    n_eval = int(metrics["n"])
    if n_eval < SMALL_EVAL:
        out.append(f"Evaluated on only {n_eval} images: one image is {100 / max(n_eval, 1):.1f} points of accuracy, "
                   f"so differences of a few points are noise.")  # fmt: skip
    if metrics["split"] == "val":
        out.append("The reported figures are on the validation split, which also chose the kept epoch or the "
                   "regularization: they are optimistic. Hold out a test split (--test-split) for an unbiased figure.")  # fmt: skip
    train_counts = [n for n in counts.get("train", {}).values() if n]
    if train_counts and max(train_counts) >= 3 * min(train_counts):
        mode = (metrics.get("balance") or {}).get("mode", "none")
        how = {"weights": "the loss was weighted by class (--balance weights)",
               "sampler": "each epoch was drawn class-balanced (--balance sampler)"}.get(mode, "nothing balanced them")  # fmt: skip
        out.append(f"{'Labels' if 'per_label' in metrics else 'Classes'} are imbalanced in training (largest {max(train_counts)}, smallest {min(train_counts)} "
                   f"images; {how}): read per-class recall and balanced accuracy, not accuracy alone.")  # fmt: skip
    if weights is None:
        out.append("No pretrained weights: the backbone is randomly initialised, so nothing was transferred from ImageNet.")
    if skipped:
        out.append(f"{skipped} unreadable image(s) were skipped (listed in report.json).")
    if unused:
        out.append(f"Options given but not used by this strategy: {', '.join(unused)}.")
    if "per_label" in metrics:
        worst = min(metrics["per_label"].items(), key=lambda kv: kv[1]["recall"])
        out.append(f"Lowest recall: label `{worst[0]}` ({worst[1]['recall']:.3f}). The model only knows these "
                   f"{len(metrics['per_label'])} labels.")  # fmt: skip
        return out
    worst = min(metrics["per_class"].items(), key=lambda kv: kv[1]["recall"])
    out.append(f"Lowest recall: class `{worst[0]}` ({worst[1]['recall']:.3f}). The model only knows these "
               f"{len(metrics['per_class'])} classes: any image gets one of them.")  # fmt: skip
    return out


def append_export(run_dir: Path, report: dict[str, Any]) -> None:
    """Add an export's checks to the card (runs trained before cards existed are left without one)."""
    from ..files import atomic_write_text

    path = Path(run_dir) / CARD
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8").replace("_None yet: `tlzoo export onnx RUN` appends its checks here._\n", "")
    check = report.get("check", "not checked")
    detail = [f"- `{Path(str(report['path'])).name}` ({report.get('variant', 'fp32')}, opset {report.get('opset', '-')}, "
              f"batch {report.get('batch', '-')}{', raw uint8 input' if report.get('raw_input') else ''}): "
              f"check **{check}**"]  # fmt: skip
    if "check_images" in report:
        detail.append(f"  on {report['check_images']} validation images: max |p - p_source| "
                      f"{report.get('max_abs_diff', float('nan')):.2e}, top-1 agreement {report.get('top1_agreement', 0):.2%}")  # fmt: skip
    if "accuracy_change_vs_fp32" in report:
        detail.append(f"  accuracy change against fp32: {100 * report['accuracy_change_vs_fp32']:+.2f} points "
                      f"({report['fp32_accuracy']:.4f} -> {report['onnx_accuracy']:.4f})")  # fmt: skip
    atomic_write_text(path, text.rstrip("\n") + "\n" + "\n".join(detail) + "\n")


def _strategy_detail(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    strategy = config["strategy"]
    if strategy == "feature-extract":
        return f", head `{config['head']}` on the frozen backbone's pooled features" + (
            f" of unit {config['tap']}" if config.get("tap") else "")
    if strategy == "two-stage":
        unfreeze = "every unit" if str(config["unfreeze"]).lower() == "all" else f"the last {config['unfreeze']} units"
        best = f", kept epoch {metrics['best_epoch']}" if metrics.get("best_epoch") else ""
        return (f": stage 1 trains the head on the frozen backbone for {config['stage1_epochs']} epochs, stage 2 "
                f"unfreezes {unfreeze} for {config['epochs']} epochs at lr {config['lr']:g} (backbone x "
                f"{config['backbone_lr_mult']:g}){best}")  # fmt: skip
    frozen = f", {metrics.get('frozen_units', 0)} of {metrics.get('units', '?')} units frozen"
    best = f", kept epoch {metrics['best_epoch']}" if metrics.get("best_epoch") else ""
    return frozen + best + f", {config['epochs']} epochs at lr {config['lr']:g}"


def _yaml(config: dict[str, Any]) -> list[str]:
    import yaml

    return yaml.safe_dump(config, sort_keys=False).rstrip("\n").splitlines()
