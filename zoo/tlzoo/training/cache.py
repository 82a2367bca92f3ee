"""The bottleneck-feature cache: features computed once per backbone, weights, tap, size and image files.

Entries live in ``$TLZOO_CACHE/features`` (default ``~/.cache/tlzoo/features``) as ``.npz`` files (plain
arrays, loaded with ``allow_pickle=False``). An entry is keyed on the files' contents (sha256 of each
file's bytes), so a copied or moved dataset still hits. To find it without reading the files again, a
small alias (``stats/KEY.json``) maps each file's path, size and modification time to that content key.
Nothing is decoded to find an entry; an entry records which files were unreadable and why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cachedir import tlzoo_cache
from ..files import atomic_write, atomic_write_json, reclaim_temp_files
from ..images.sets import ImageList


def cache_root() -> Path:
    return tlzoo_cache() / "features"


def cache_key(**parts: Any) -> str:
    """A stable key over everything that changes the features."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass
class Entry:
    """The features of the readable files of one image list: ``kept`` indexes them in the list."""

    features: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[str, str]]


class Slot:
    """Where the features of one image list under one model are, or will be, cached."""

    def __init__(self, model_key: dict[str, Any], files: ImageList) -> None:
        self.model_key = model_key
        self.files = files
        self.stat_key = cache_key(model=model_key, files=files.stats())
        self._key: str | None = None
        self._aliased = False  # the key came from the alias (no need to write it again)

    @property
    def key(self) -> str:
        """The content key (reads every file once when no alias knows it yet)."""
        if self._key is None:
            alias = _read_alias(self.stat_key)
            self._aliased = alias is not None
            self._key = alias or cache_key(model=self.model_key, files=self.files.digests())
        return self._key

    @property
    def path(self) -> Path:
        return cache_root() / f"{self.key}.npz"

    def load(self) -> Entry | None:
        entry = _read(self.path, len(self.files))
        if entry is not None and not self._aliased:
            _write_alias(self.stat_key, self.key)
            self._aliased = True
        return entry

    def store(self, entry: Entry) -> Path:
        path = self.path
        reclaim_temp_files(path.parent)
        arrays = {"features": entry.features, "kept": entry.kept,
                  "skipped_paths": np.asarray([p for p, _ in entry.skipped], dtype=str),
                  "skipped_errors": np.asarray([e for _, e in entry.skipped], dtype=str)}  # fmt: skip

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]

        atomic_write(path, write)
        _write_alias(self.stat_key, self.key)
        self._aliased = True
        return path


def data_fingerprint(files: ImageList) -> str:
    """:func:`tlzoo.images.sets.fingerprint` of ``files`` (every file's bytes and label), remembered like an entry's key
    by the files' paths, sizes and modification times: a run over unchanged files reads none of them."""
    from ..images.sets import fingerprint

    stat_key = cache_key(fingerprint_of=files.stats(), labels=np.asarray(files.labels).tolist())
    known = _read_alias(stat_key, length=64, folder="fingerprints")
    if known is not None:
        return known
    value = fingerprint(files.paths, np.asarray(files.labels))
    try:
        _write_alias(stat_key, value, folder="fingerprints")
    except OSError:  # a read-only or full cache: the fingerprint is read again next time, nothing else changes
        pass
    return value


def _read(path: Path, n_files: int) -> Entry | None:
    """An entry, or None when it is missing, unreadable or does not fit the list (recomputed and overwritten)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            features, kept = np.array(data["features"], np.float32), np.array(data["kept"], np.int64)
            skipped = list(zip(data["skipped_paths"].tolist(), data["skipped_errors"].tolist()))
    except (OSError, ValueError, KeyError, EOFError):
        return None
    fits = (features.ndim == 2 and kept.ndim == 1 and len(kept) == len(features) and len(kept) + len(skipped) == n_files
            and (len(kept) == 0 or (int(kept.min()) >= 0 and int(kept.max()) < n_files)))  # fmt: skip
    return Entry(features, kept, skipped) if fits else None


def _alias_path(stat_key: str, folder: str = "stats") -> Path:
    return cache_root() / folder / f"{stat_key}.json"


def _read_alias(stat_key: str, length: int = 32, folder: str = "stats") -> str | None:
    try:
        key = json.loads(_alias_path(stat_key, folder).read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) and len(key) == length and all(c in "0123456789abcdef" for c in key) else None


def _write_alias(stat_key: str, key: str, folder: str = "stats") -> None:
    path = _alias_path(stat_key, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"key": key})
