"""What a run records beside its metrics: where it ran (environment.json) and, for a data-parallel job, each
rank's share."""

from __future__ import annotations

import platform
import sys
from typing import Any


from ..images.sets import ImageList
from ..images.split import Splits, part_fingerprint
from ..version import package_versions
from . import cache as feature_cache
from .engine import Engine


def job_record(engine: Engine, n_train: int) -> dict[str, Any]:
    """What a data-parallel run records: world size, backend, each rank's share of the last epoch and its weights."""
    info = engine.job_info
    if not info:
        return {}
    if engine.world_size == 1:  # several devices in one process (Keras' MirroredStrategy)
        return {"distributed": {**info, "train_images": n_train}}
    seen = engine.gather(engine.last_epoch_indices())
    record = {**info, "train_images": n_train, "weights_sha256_per_rank": engine.gather(engine.model_digest())}
    if any(seen):  # strategies that train: each rank's shard of the last epoch
        distinct = set().union(*map(set, seen))
        record.update(last_epoch_images_per_rank=[len(s) for s in seen], last_epoch_distinct_images=len(distinct),
                      last_epoch_images_seen_twice=sum(map(len, seen)) - len(distinct))  # fmt: skip
    else:  # feature-extract: each rank extracted every world_size-th image
        record["feature_images_per_rank"] = [len(range(r, n_train, engine.world_size)) for r in range(engine.world_size)]
    return {"distributed": record}


def peak_memory_mb() -> float | None:
    """This process's peak resident memory (the run is one process per training)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def environment(device: str, splits: Splits, *, remember: bool) -> dict[str, Any]:
    """What the run ran on; the training files' fingerprint is remembered in the cache (``remember``) by their
    paths, sizes and times, so an unchanged dataset is not read again to record it."""
    train = splits.train
    return {
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "device": device, "packages": package_versions(),
        "data": {"root": str(splits.root), "fingerprint_sha256": feature_cache.data_fingerprint(train)
                 if remember and isinstance(train, ImageList) else part_fingerprint(train),
                 "classes": len(splits.classes), "train": len(splits.train), "val": len(splits.val),
                 "test": len(splits.test) if splits.test is not None else 0},
    }  # fmt: skip

