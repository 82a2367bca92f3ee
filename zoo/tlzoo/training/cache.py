"""The bottleneck-feature cache: features computed once per backbone, weights, tap, size and data.

Entries live in ``$TLZOO_CACHE/features`` (default ``~/.cache/tlzoo/features``)
as ``.npz`` files (plain arrays, loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import atomic_write, reclaim_temp_files


def cache_root() -> Path:
    base = os.environ.get("TLZOO_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "tlzoo")
    return Path(base).expanduser() / "features"


def cache_key(**parts: Any) -> str:
    """A stable key over everything that changes the features."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def load(key: str) -> np.ndarray | None:
    path = cache_root() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.array(data["features"])
    except (OSError, ValueError, KeyError):
        return None  # unreadable entry: recompute and overwrite


def store(key: str, features: np.ndarray) -> Path:
    path = cache_root() / f"{key}.npz"
    reclaim_temp_files(path.parent)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, features=features)

    atomic_write(path, write)
    return path
