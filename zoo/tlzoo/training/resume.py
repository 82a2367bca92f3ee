"""What ``--resume`` reads back from an interrupted run: its config (only where it computes may change) and the
split it recorded, refusing a file missing or changed since."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from ..cachedir import tlzoo_cache
from ..errors import DataError, UsageError
from ..images.datasets import default_data_root
from ..images.sets import ImageList
from ..images.split import Splits
from ..images.store import content_digests
from ..registry import get_registry
from ..runs.runfiles import STATE_STEM, RunFiles
from .config import TrainConfig


# Options that may differ when resuming: they change where the run computes, not what it computes.
RESUME_MAY_CHANGE = ("device", "workers", "threads")


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """The run's own config.yaml; ``overrides`` (options given with --resume) may only repeat it."""
    files = RunFiles(run_dir)
    path = files.config
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a tlzoo run directory (no {path.name})")
    if files.finished():
        raise UsageError(f"{run_dir} has finished training; --resume continues interrupted runs only "
                         f"(start a new run, or export this one: tlzoo export onnx {run_dir})")  # fmt: skip
    cfg = TrainConfig.load(path)
    import yaml

    if "balance" not in (yaml.safe_load(path.read_text()) or {}):  # recorded before --balance: it trained unbalanced
        cfg.balance = "none"
    if cfg.strategy != "feature-extract" and not any(run_dir.glob(f"{STATE_STEM}*")):
        # said before the split is read or any image decoded
        raise UsageError(f"{run_dir} has no resumable state: it was stopped before its first epoch finished. "
                         f"Start a new run (the folder holds no result)")  # fmt: skip
    notes, differing = [], []
    for key, value in overrides.items():
        saved = getattr(cfg, key, None)
        if key in RESUME_MAY_CHANGE:
            if value != saved:
                setattr(cfg, key, value)
                notes.append(f"resuming with --{key.replace('_', '-')} {value} (the run used {saved})")
        elif key == "backbone" and get_registry().resolve(str(value), cfg.framework).id == cfg.backbone:
            continue
        elif value != saved and not (key == "image_size" and value is None):
            differing.append(f"--{key.replace('_', '-')} (run: {saved}, given: {value})")
    if differing:
        raise UsageError(
            f"--resume {run_dir} continues the run with its own settings; these differ from its config.yaml: "
            f"{'; '.join(differing)}. Leave them out, or start a new run"
        )
    return cfg, notes


def recorded_splits(run_dir: Path, data: str | None) -> Splits:
    """The split an interrupted run recorded (``split.csv``), for ``--resume``: the same files in the same parts,
    whatever ``--data`` now holds or the current folder is. A file missing or changed since is refused in one
    line, before anything is decoded."""
    from ..runs.runfiles import SPLIT, RunFiles, split_labels

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
    if not missing and not changed:  # the same size may hold other bytes (a file replaced, its mtime kept)
        hashed = [r for r in rows if r.get("sha256")]
        now = content_digests(tlzoo_cache(), [r["path"] for r in hashed])
        changed = [r["path"] for r, digest in zip(hashed, now) if digest != r["sha256"]]
    for what, paths in (("missing", missing), ("changed", changed)):
        if paths:
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            raise DataError(f"--resume trains on the split {run_dir / SPLIT} recorded, and {len(paths)} of its "
                            f"{len(rows)} files are {what} since: {shown}. Put them back, or start a new run")  # fmt: skip
    parts = {}
    for name in ("train", "val", "test"):
        chosen = [r for r in rows if r["subset"] == name]
        parts[name] = ImageList([r["path"] for r in chosen], split_labels(chosen, classes), classes) if chosen else None
    if parts["train"] is None or parts["val"] is None:
        raise UsageError(f"{run_dir / SPLIT} has no training or no validation images; it cannot be resumed")
    return Splits(train=parts["train"], val=parts["val"], test=parts["test"], classes=classes,
                  root=Path(data) if data else default_data_root())  # fmt: skip
