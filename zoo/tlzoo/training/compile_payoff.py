"""``--compile auto``: compile the training step only where the compile time is paid back.

Compiling (torch.compile with inductor) costs from tens of seconds to minutes, once per model, input shape,
batch, GPU and torch version (inductor's own cache, kept in tlzoo's cache, makes a repeat cheaper), and then
makes each step faster by some fraction. So auto trains the first :data:`PROBE_STEPS` steps eagerly, times them
(after :data:`WARM_STEPS` of warm-up), estimates the eager time of the whole run, and compiles when

- a compile time is recorded for this model, shape, batch, GPU and torch, and it is under the time compiling
  should save (:data:`EXPECTED_GAIN` of the eager estimate); or
- none is recorded and the eager estimate is over :data:`NO_RECORD_MIN_S` (10 minutes): the compile time is
  then measured and recorded for the next run.

The decision and its reason go in the run's ``metrics.json`` (``compile``) and are said as the run goes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

PROBE_STEPS = 20
WARM_STEPS = 5
NO_RECORD_MIN_S = 600.0
EXPECTED_GAIN = 0.2  # a compiled step is taken to be this much faster (inductor, CNNs on a GPU: 15-45 %)


@dataclass(frozen=True)
class Decision:
    compile: bool
    why: str


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def decide(recorded_s: float | None, eager_estimate_s: float) -> Decision:
    """Whether to compile, given the recorded compile time (None: never measured) and the eager estimate."""
    eager = f"eager training estimated at {_minutes(eager_estimate_s)}"
    if recorded_s is None:
        if eager_estimate_s > NO_RECORD_MIN_S:
            return Decision(True, f"{eager}, over {_minutes(NO_RECORD_MIN_S)}, and no compile time recorded for "
                                  f"this model, shape, batch, GPU and torch: compiling, and recording how long it takes")  # fmt: skip
        return Decision(False, f"{eager}; no compile time recorded for this model, shape, batch, GPU and torch, and "
                               f"compiling pays only on runs over {_minutes(NO_RECORD_MIN_S)}: eager")  # fmt: skip
    saving = EXPECTED_GAIN * eager_estimate_s
    if recorded_s < saving:
        return Decision(True, f"{eager}; compiling took {_minutes(recorded_s)} here before, under the "
                              f"{_minutes(saving)} it should save: compiling")  # fmt: skip
    return Decision(False, f"{eager}; compiling took {_minutes(recorded_s)} here before, more than the "
                           f"{_minutes(saving)} it would save: eager")  # fmt: skip


def record_key(backbone: str, shape: tuple[int, ...], batch: int, device: str, framework: str) -> str:
    return json.dumps([backbone, list(shape), batch, device, framework])


def _path(cache: Path) -> Path:
    return Path(cache) / "compile" / "times.json"


def recorded(cache: Path, key: str) -> float | None:
    try:
        value = json.loads(_path(cache).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and value >= 0 else None


def remember(cache: Path, key: str, seconds: float) -> None:
    """Record a measured compile time (best effort: the cache is an optimisation)."""
    from ..files import atomic_write_json

    path = _path(cache)
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
        data = data if isinstance(data, dict) else {}
        data[key] = round(float(seconds), 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, data)
    except (OSError, ValueError):
        pass


def use_cache_for_inductor(cache: Path) -> None:
    """Keep inductor's compiled kernels in tlzoo's cache (unless the user points them elsewhere)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache) / "inductor"))
