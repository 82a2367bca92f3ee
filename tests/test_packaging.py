"""The wheel installs only tlzoo-named packages, with their data; a third-party plugin package works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO, run_tlzoo


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, text=True, timeout=600)


def test_wheel_contains_only_tlzoo_named_top_level_packages(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    [wheel] = tmp_path.glob("tlzoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"tlzoo", "tlzoo_torchvision", "tlzoo_keras", "tlzoo_onnx"}
    assert "tlzoo_torchvision/backbones.json" in names and "tlzoo_keras/backbones.json" in names
    assert "tlzoo/cli/app.py" in names and "tlzoo/py.typed" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[tlzoo]\nkeras = tlzoo_keras\nonnx = tlzoo_onnx\ntorchvision = tlzoo_torchvision" in text
    assert "tlzoo = tlzoo.cli.app:main" in text


def test_mypy_resolves_the_same_package_names():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def tinynet_site(tmp_path_factory) -> Path:
    """The example plugin installed from its own package, into its own directory."""
    import shutil

    site = tmp_path_factory.mktemp("tinynet-site")
    source = tmp_path_factory.mktemp("tinynet-src") / "tlzoo-tinynet"
    shutil.copytree(REPO / "examples" / "tlzoo-tinynet", source)  # building writes build/ beside the sources
    _pip("install", "--no-deps", "--no-build-isolation", "--target", str(site), str(source))
    return site


def test_third_party_plugin_lists_describes_and_builds(tinynet_site):
    env = {"PYTHONPATH": os.pathsep.join([str(tinynet_site), os.environ.get("PYTHONPATH", "")])}
    listing = run_tlzoo("list-backbones", "--json", "--filter", "tiny*", env=env)
    assert listing.returncode == 0, listing.stderr
    assert [r["id"] for r in json.loads(listing.stdout)] == ["torch/tinynet"]
    plugins = {r["name"]: r for r in json.loads(run_tlzoo("plugins", "--json", env=env).stdout)}
    assert plugins["tinynet"]["status"] == "ok" and plugins["tinynet"]["source"] == "entry point (tlzoo-tinynet)"
    built = run_tlzoo("describe", "tinynet", "--build", "--json", env=env)
    assert built.returncode == 0, built.stderr
    units = json.loads(built.stdout)["units"]
    assert [(u["name"], u["params"]) for u in units] == [("features.0", 480), ("features.3", 4704), ("features.6", 9312)]
    static = json.loads(run_tlzoo("describe", "tinynet", "--json", env=env).stdout)["units"]
    assert static == units
    code = (
        "import numpy as np, tlzoo; b = tlzoo.get_backbone('tinynet'); "
        "print(b.extract_features(np.zeros((2, 64, 64, 3), np.uint8)).shape, b.num_params)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert out.stdout.strip() == "(2, 32) 14496", out.stderr


def test_autoload_switch_skips_third_party_but_keeps_builtins(tinynet_site):
    env = {"PYTHONPATH": str(tinynet_site), "TLZOO_DISABLE_PLUGIN_AUTOLOAD": "1"}
    ids = [r["id"] for r in json.loads(run_tlzoo("list-backbones", "--json", env=env).stdout)]
    assert "torch/tinynet" not in ids and len(ids) == 18
