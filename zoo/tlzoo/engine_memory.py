"""What ``--feature-engine auto`` measured, remembered across runs.

auto times the framework against each installed engine on a run's own batches. Which one wins depends on the
backbone, its weights, the tap, the input size, the batch, the machine and the installed packages, never on the
images, so the answer is kept in the engines' cache folder (:data:`FILE`) under a key of exactly those. A later
run with the same key takes the remembered engine without measuring again; an engine that can reopen its
prepared work from plain data (``FeatureEngineSpec.reopen``) then runs without the backbone's framework being
imported or the backbone built, which is most of a cold run's fixed cost. So the engine remembered is the one
that finishes the measured job first from a new process, its start included (the framework's import and build,
or the engine's opening, as that run timed them), which is not always the fastest per image.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

FILE = "auto.json"
KEEP = 64  # records kept, the most recently measured


@dataclass
class Remembered:
    """auto's choice on an earlier run: the engine kept, the rates it was chosen on, when, and (for an engine
    that offers one) the plain-data ``entry`` that reopens its prepared work."""

    engine: str
    images_per_second: dict[str, float]
    measured: str
    entry: dict[str, Any] | None = field(default=None)
    start_seconds: dict[str, float] = field(default_factory=dict)  # what starting each engine cost (Choice's)

    def evidence(self) -> str:
        def said(name: str) -> str:
            start = self.start_seconds.get(name)
            return f"{self.images_per_second[name]:.0f} images/s" + (f" after {start:.1f} s to start" if start is not None else "")

        others = ", ".join(f"{n} {said(n)}" for n in self.images_per_second if n != self.engine)
        day = self.measured[:10]
        return (f"remembered from {day}: {said(self.engine)} against {others}, measured on an earlier run of this "
                f"backbone on this machine") if self.engine in self.images_per_second else f"remembered from {day}"  # fmt: skip


def key(identity: dict[str, Any]) -> str:
    """The record's key: ``identity`` (backbone, weights digest, tap, size, batch, device) and this machine."""
    text = json.dumps({**identity, "machine": machine()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def machine() -> dict[str, Any]:
    """What an engine's speed depends on besides the job: the processor, the cores this process may use, whether
    a CUDA driver is present, and the installed packages' versions (read from their metadata, none imported)."""
    from .images.decode import available_cores, cuda_driver_present
    from .version import package_versions

    return {"arch": platform.machine(), "cpu": _cpu_name(), "cores": available_cores(),
            "cuda": cuda_driver_present(), "packages": package_versions()}  # fmt: skip


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def recall(cache_dir: Path, record_key: str) -> Remembered | None:
    """The record under ``record_key``; None when there is none or the file is unreadable or malformed (the
    memory is an optimization: auto then measures)."""
    record = _records(Path(cache_dir)).get(record_key)
    if not isinstance(record, dict):
        return None
    rates, start = record.get("images_per_second"), record.get("start_seconds", {})
    entry = record.get("entry")
    if not (isinstance(record.get("engine"), str) and isinstance(record.get("measured"), str)
            and _numbers(rates) and _numbers(start) and (entry is None or isinstance(entry, dict))):  # fmt: skip
        return None
    return Remembered(record["engine"], {k: float(v) for k, v in rates.items()}, record["measured"], entry,
                      {k: float(v) for k, v in start.items()})  # fmt: skip


def _numbers(value: Any) -> TypeGuard[dict[str, float]]:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in value.items())


def remember(cache_dir: Path, record_key: str, engine: str, images_per_second: dict[str, float],
             entry: dict[str, Any] | None, start_seconds: dict[str, float] | None = None) -> None:  # fmt: skip
    """Keep auto's measured choice (the newest :data:`KEEP` records are kept). Raises OSError when the cache
    cannot be written."""
    from .files import atomic_write_json

    records = _records(Path(cache_dir))
    records.pop(record_key, None)
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    records[record_key] = asdict(Remembered(engine, {k: round(v, 1) for k, v in images_per_second.items()}, now, entry,
                                            {k: round(v, 2) for k, v in (start_seconds or {}).items()}))  # fmt: skip
    newest = sorted(records, key=lambda k: str(records[k].get("measured", "")) if isinstance(records[k], dict) else "")
    atomic_write_json(Path(cache_dir) / FILE, {k: records[k] for k in newest[-KEEP:]})


def _records(cache_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((cache_dir / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
