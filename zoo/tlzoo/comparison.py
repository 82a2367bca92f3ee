"""``tlzoo compare``: backbones x strategies on your own data, side by side.

Every combination is a normal ``tlzoo train`` run (same split, same seed,
shared feature cache) in its own process: a failure, a crash or a blown time
budget stays with that combination, and torch and TensorFlow never share a
process. The winner's run directory exports directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .plugins import child_env
from .runs.runfiles import ENVIRONMENT, METRICS, RunFiles
from .settings import Setting
from .training.config import SETTINGS_BY_NAME, STRATEGIES, TRAIN_SETTINGS

# Parameters a strategy string may set: the training settings declared per_strategy (tlzoo.TrainConfig).
PARAMS = {setting.name: setting for setting in TRAIN_SETTINGS if setting.per_strategy}
SECONDS_PER_IMAGE_FLOOR = 0.01  # no backbone extracts features faster than this on a CPU


@dataclass
class Combination:
    backbone: str
    strategy: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = ":".join(f"{k}={v}" for k, v in self.params.items())
        return self.strategy + (f":{extra}" if extra else "")

    @property
    def run_name(self) -> str:
        slug = self.label.replace(":", "-").replace("=", "").replace(",", "_")
        return f"{self.backbone.replace('/', '-')}-{slug}"


def parse_strategies(text: str) -> list[tuple[str, dict[str, str]]]:
    """``feature-extract,fine-tune:freeze=0,4,8,two-stage:unfreeze=20`` -> one entry per setting.

    A comma starts a new strategy only where a strategy name follows; otherwise it adds a
    value to the previous parameter (a sweep: ``fine-tune:freeze=0,4,8``).
    """
    entries: list[tuple[str, dict[str, list[str]]]] = []
    last_key: str | None = None
    for token in [t.strip() for t in text.split(",") if t.strip()]:
        name = token.split(":", 1)[0]
        if name in STRATEGIES:
            params: dict[str, list[str]] = {}
            for part in token.split(":")[1:]:
                key, sep, value = part.partition("=")
                key = key.strip().replace("-", "_")
                if not sep or not value:
                    raise UsageError(f"strategy parameter {part!r} in {token!r} must look like key=value")
                if key not in PARAMS:
                    raise UsageError(f"unknown strategy parameter {key!r} in {token!r}; known: {', '.join(PARAMS)}")
                params[key] = [value.strip()]
                last_key = key
            entries.append((name, params))
        elif entries and last_key is not None and ":" not in token and "=" not in token:
            entries[-1][1][last_key].append(token)
        else:
            import difflib

            close = difflib.get_close_matches(name, list(STRATEGIES), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown strategy {name!r}.{hint} Choose from: {', '.join(STRATEGIES)}")
    out: list[tuple[str, dict[str, str]]] = []
    for name, params in entries:
        sweeps = [(k, v) for k, v in params.items() if len(v) > 1]
        if len(sweeps) > 1:
            raise UsageError(f"{name}: sweep one parameter at a time ({', '.join(k for k, _ in sweeps)} all have several values)")
        fixed = {k: v[0] for k, v in params.items() if len(v) == 1}
        if sweeps:
            key, values = sweeps[0]
            out += [(name, {**fixed, key: value}) for value in values]
        else:
            out.append((name, fixed))
    return out


def _check_params(strategy: str, params: dict[str, str]) -> None:
    """A strategy string obeys train's rule: a parameter that does not fit its strategy is refused."""
    from .training.config import TrainConfig

    converted: dict[str, Any] = {"strategy": strategy}
    for key, value in params.items():
        converted[key] = PARAMS[key].check(value)
    cfg = TrainConfig(**converted)
    cfg.apply_given({"strategy", *params})
    cfg.validate()


def plan(data: Path, backbones: list[str], strategies: str, budget_minutes: float | None) -> list[Combination]:
    """Every combination, checked before any training starts."""
    from .images.folders import scan
    from .freeze import parse_freeze, parse_unit
    from .registry import get_registry

    registry = get_registry()
    specs = [registry.resolve(b) for b in backbones]
    parsed = parse_strategies(strategies)
    combos = []
    for spec in specs:
        names = [u.name for u in spec.units]
        for strategy, params in parsed:
            try:
                _check_params(strategy, params)
                if "freeze" in params and names:
                    parse_freeze(params["freeze"], names)
                if "tap" in params and names:
                    parse_unit(params["tap"], names)
            except UsageError as exc:
                raise type(exc)(f"{spec.id} {strategy}: {exc}") from None
            combos.append(Combination(spec.id, strategy, params))
    n_images = len(scan(data))
    if budget_minutes is not None:
        needed = max(1.0, n_images * SECONDS_PER_IMAGE_FLOOR)
        if budget_minutes <= 0 or budget_minutes * 60 < needed:
            raise UsageError(
                f"--budget {budget_minutes:g} minutes is too small for even one combination: passing {n_images} images "
                f"through a backbone once takes at least {needed:.0f} s"
            )
    return combos


# Training settings every combination shares, with compare's own defaults and words where they differ.
SHARED = {
    "epochs": (5, "Epochs for the strategies that train a network."),
    "image_size": (None, "Resize images to this size (default: each backbone's)."),
    "batch_size": (32, ""),
    "test_split": (0.2, "Share of --data held out as the common test set."),
    "augment": ("auto", "auto | none | flip,crop (for the strategies that train the backbone)."),
    "weights": ("auto", "Backbone weights for every combination but scratch: auto | none | a tag."),
    "seed": (0, "The same seed, hence the same split, for every combination."),
    "balance": ("auto", ""),
    "calibrate": ("auto", ""),
}


def shared_settings() -> tuple[Setting, ...]:
    """compare's options that every combination's ``tlzoo train`` receives: train's own declarations."""
    return tuple(dataclasses.replace(SETTINGS_BY_NAME[name], default=default, help=words or SETTINGS_BY_NAME[name].help,
                                     group="Shared by every combination") for name, (default, words) in SHARED.items())  # fmt: skip


def common_args(**values: Any) -> list[str]:
    """The train options every combination shares (same split, same seed), each checked like train checks it."""
    unknown = sorted(set(values) - set(SHARED))
    if unknown:
        raise UsageError(f"unknown compare option(s) {', '.join(unknown)}; the shared ones are: {', '.join(SHARED)}")
    args = []
    for setting in shared_settings():
        value = setting.check(values.get(setting.name, setting.default))
        if value is not None:
            args += setting.cli_args(value)
    return args


def run_combination(combo: Combination, common: list[str], out_dir: Path, timeout: float | None) -> dict[str, Any]:
    if combo.strategy == "scratch" and "--weights" in common:  # scratch starts from random weights by definition
        at = common.index("--weights")
        common = common[:at] + common[at + 2 :]
    args = [sys.executable, "-m", "tlzoo", "train", "--backbone", combo.backbone, "--strategy", combo.strategy,
            *common, "--out-dir", str(out_dir / "runs"), "--name", combo.run_name, "--exist-ok", "--json"]  # fmt: skip
    if combo.strategy == "feature-extract":
        args += ["--augment", "none"]  # --augment is for the strategies that train the backbone
    for key, value in combo.params.items():
        args += PARAMS[key].cli_args(value)  # hidden=512+128: two layers
    row: dict[str, Any] = {"backbone": combo.backbone, "strategy": combo.label, "run_dir": str(out_dir / "runs" / combo.run_name)}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "COLUMNS": "120", **child_env()})  # fmt: skip
    except subprocess.TimeoutExpired:
        row.update(status="over budget", error=f"stopped after {timeout:.0f} s (the rest of --budget)")
        return row
    row["wall_s"] = round(time.perf_counter() - t0, 2)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        row.update(status="failed", error=" ".join(lines[-3:])[-500:] or f"exit code {done.returncode}")
        return row
    summary = json.loads(done.stdout)
    metrics = RunFiles(summary["run_dir"]).read_json(METRICS)
    history = _history(Path(summary["run_dir"]))
    speeds = [float(r["images_per_second"]) for r in history if r.get("images_per_second")]
    n_train = _n_train(Path(summary["run_dir"]))
    images_per_s: float | None
    if speeds:
        images_per_s = sorted(speeds)[len(speeds) // 2]
    elif metrics.get("feature_seconds"):
        images_per_s = n_train / max(metrics["feature_seconds"], 1e-9) if metrics.get("feature_cache") != "hit" else None
    else:
        images_per_s = None
    row.update(
        status="ok", run_dir=summary["run_dir"], accuracy=metrics["accuracy"], log_loss=metrics["log_loss"],
        macro_f1=metrics["macro_f1"], balanced_accuracy=metrics.get("balanced_accuracy"), ece=metrics.get("ece"),
        **({"mean_average_precision": metrics["mean_average_precision"], "micro_f1": metrics["micro_f1"]}
           if "mean_average_precision" in metrics else {}),
        train_s=metrics["train_seconds"], images_per_s=images_per_s,
        trainable_params=metrics["trainable_params"], peak_memory_mb=metrics.get("peak_memory_mb"),
        split=metrics["split"], feature_cache=metrics.get("feature_cache"), images_decoded=metrics.get("images_decoded"),
    )  # fmt: skip
    return row


def _history(run_dir: Path) -> list[dict[str, str]]:
    return RunFiles(run_dir).read_history()


def _n_train(run_dir: Path) -> int:
    env = RunFiles(run_dir).read_json(ENVIRONMENT)
    return int(env["data"]["train"])


def onnx_latency(row: dict[str, Any], runs: int = 30, fmt: str = "onnx") -> None:
    """Export the run (checked) and time batch-1 inference with the format's runtime on the CPU."""
    done = subprocess.run([sys.executable, "-m", "tlzoo", "export", fmt, row["run_dir"], "--json"],
                          capture_output=True, text=True, env={**os.environ, **child_env()})  # fmt: skip
    if done.returncode != 0:
        row[f"{fmt}_error"] = (done.stderr.strip().splitlines() or ["export failed"])[-1][-300:]
        return
    import numpy as np

    from .runs.loading import open_model

    report = json.loads(done.stdout)
    model = open_model(report["path"], provider="cpu")
    h, w = model.input_size
    image = np.zeros((1, h, w, 3), np.uint8)
    for _ in range(3):
        model.predict_proba(image, batch_size=1)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict_proba(image, batch_size=1)
        samples.append(time.perf_counter() - t0)
    row[f"{fmt}_path"] = report["path"]
    row[f"{fmt}_latency_ms"] = 1000 * sorted(samples)[len(samples) // 2]


def compare(data: Path, backbones: list[str], strategies: str, *, out_dir: Path, budget_minutes: float | None,
            common: list[str], onnx: bool = True, on_row: Any = None, on_start: Any = None) -> list[dict[str, Any]]:  # fmt: skip
    combos = plan(data, backbones, strategies, budget_minutes)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget_minutes * 60 if budget_minutes is not None else None
    rows = []
    for number, combo in enumerate(combos, start=1):
        if on_start is not None:
            on_start(number, len(combos), combo)
        left = deadline - time.monotonic() if deadline is not None else None
        if left is not None and left <= 0:
            row = {"backbone": combo.backbone, "strategy": combo.label, "status": "skipped", "error": "--budget spent"}
        else:
            row = run_combination(combo, ["--data", str(data), *common], out_dir, left)
            if row["status"] == "ok" and onnx:
                onnx_latency(row)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    write_reports(rows, out_dir)
    return rows


COLUMNS = [("backbone", "backbone"), ("strategy", "strategy"), ("status", "status"), ("accuracy", "test acc"),
           ("log_loss", "log loss"), ("macro_f1", "macro F1"), ("balanced_accuracy", "bal acc"), ("ece", "ECE"),
           ("train_s", "train s"), ("images_per_s", "img/s"),
           ("trainable_params", "trainable"), ("peak_memory_mb", "peak MB"), ("onnx_latency_ms", "ONNX ms")]  # fmt: skip


# a multi-label comparison's columns: ranked by mean average precision; "accuracy" is the subset accuracy
MULTILABEL_COLUMNS = [("backbone", "backbone"), ("strategy", "strategy"), ("status", "status"),
                      ("mean_average_precision", "test mAP"), ("micro_f1", "micro F1"), ("macro_f1", "macro F1"),
                      ("accuracy", "subset acc"), ("log_loss", "log loss"), ("ece", "ECE"), *COLUMNS[8:]]  # fmt: skip


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The leaderboard's columns: a multi-label comparison's when any run has a mean average precision."""
    return MULTILABEL_COLUMNS if any("mean_average_precision" in r for r in rows) else COLUMNS


def cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key in ("accuracy", "macro_f1", "balanced_accuracy", "ece", "mean_average_precision", "micro_f1"):
        return f"{value:.4f}"
    if key == "log_loss":
        return f"{value:.3f}"
    if key in ("train_s", "images_per_s", "onnx_latency_ms"):
        return f"{value:.1f}"
    if key == "trainable_params":
        return f"{value:,}"
    if key == "peak_memory_mb":
        return f"{value:.0f}"
    return str(value)


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first: by accuracy, a multi-label comparison by mean average precision; then by log loss."""
    key = "mean_average_precision" if any("mean_average_precision" in r for r in rows) else "accuracy"
    return sorted(rows, key=lambda r: (r.get("status") != "ok", -(r.get(key) or 0), r.get("log_loss") or 0))


def write_reports(rows: list[dict[str, Any]], out_dir: Path) -> None:
    from .files import atomic_write_json, atomic_write_text

    board = ranked(rows)
    atomic_write_json(out_dir / "leaderboard.json", board)
    shown = columns(rows)
    lines = ["| " + " | ".join(h for _, h in shown) + " |", "|" + "---|" * len(shown)]
    for r in board:
        lines.append("| " + " | ".join(cell(r, k) for k, _ in shown) + " |")
    failures = [r for r in board if r.get("status") != "ok"]
    if failures:
        lines += ["", *(f"- {r['backbone']} {r['strategy']}: {r['status']}: {r.get('error', '')}" for r in failures)]
    atomic_write_text(out_dir / "leaderboard.md", "\n".join(lines) + "\n")
    plot(board, out_dir)


def plot(rows: list[dict[str, Any]], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_write

    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return
    # Numbered points and a legend: labels written beside the points overlap as soon as two runs take
    # similar times, and get cut at the edges.
    fig, ax = plt.subplots(figsize=(9, 5))
    times = [float(r["train_s"]) for r in ok]
    for number, r in enumerate(ok, start=1):
        ax.scatter(r["train_s"], r["accuracy"], s=40, zorder=3, label=f"{number}  {r['backbone']} {r['strategy']}")
        ax.annotate(str(number), (r["train_s"], r["accuracy"]), fontsize=8, textcoords="offset points",
                    xytext=(5, 4) if number % 2 else (5, -11))  # alternate, so neighbours do not overprint
    if max(times) > 10 * min(times):
        ax.set_xscale("log")
        ax.set_xlabel("training time (s, log scale)")
    else:
        ax.set_xlabel("training time (s)")
    ax.margins(x=0.12, y=0.12)
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy against training time (up and left is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    atomic_write(out_dir / "accuracy_vs_time.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)

    strategies = sorted({r["strategy"] for r in ok})
    backbones = sorted({r["backbone"] for r in ok})
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(strategies) * max(1, len(backbones)) / 2), 4.5))
    width = 0.8 / max(1, len(backbones))
    for i, b in enumerate(backbones):
        xs, ys = [], []
        for j, s in enumerate(strategies):
            match = [r for r in ok if r["backbone"] == b and r["strategy"] == s]
            if match:
                xs.append(j + i * width)
                ys.append(match[0]["accuracy"])
        bars = ax.bar(xs, ys, width=width, label=b)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks([j + width * (len(backbones) - 1) / 2 for j in range(len(strategies))], strategies, rotation=20, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=min(4, len(backbones)), frameon=False)
    ax.set_title("test accuracy per strategy")
    fig.tight_layout()
    atomic_write(out_dir / "accuracy_by_strategy.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
