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
    assert top == {"tlzoo", "tlzoo_torch", "tlzoo_torchvision", "tlzoo_keras", "tlzoo_onnx", "tlzoo_timm"}
    assert "tlzoo_torchvision/backbones.json" in names and "tlzoo_keras/backbones.json" in names
    assert "tlzoo_timm/index.json" in names and "tlzoo_timm/units.json.gz" in names
    assert "tlzoo/cli/app.py" in names and "tlzoo/py.typed" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[tlzoo]\nkeras = tlzoo_keras\nonnx = tlzoo_onnx\ntimm = tlzoo_timm\ntorch = tlzoo_torch\ntorchvision = tlzoo_torchvision" in text
    assert "tlzoo = tlzoo.cli.app:main" in text


def test_mypy_resolves_the_same_package_names():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr


def _install_example(name: str, tmp_path_factory) -> Path:
    """An example plugin installed from its own pyproject.toml, into its own directory."""
    import shutil

    site = tmp_path_factory.mktemp(f"{name}-site")
    source = tmp_path_factory.mktemp(f"{name}-src") / name
    shutil.copytree(REPO / "examples" / name, source)  # building writes build/ beside the sources
    _pip("install", "--no-deps", "--no-build-isolation", "--target", str(site), str(source))
    return site


@pytest.fixture(scope="module")
def tinynet_site(tmp_path_factory) -> Path:
    return _install_example("tlzoo-tinynet", tmp_path_factory)


@pytest.mark.parametrize("example, package, backbone", [
    ("tlzoo-tinynet", "tlzoo_tinynet", "torch/tinynet"),
    ("tlzoo-kerasnet", "tlzoo_kerasnet", "keras/kerasnet"),
])  # fmt: skip
def test_example_plugins_pass_their_own_tests_and_ship_current_specs(example, package, backbone, tmp_path_factory):
    """Each example, installed from its own pyproject: its own tests (written with tlzoo.testing) pass, its
    backbones.json is what `tlzoo spec --check` builds today, and tlzoo lists it from the entry point."""
    site = _install_example(example, tmp_path_factory)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    tests = REPO / "examples" / example / "tests"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tests), str(tests)],
                          capture_output=True, text=True, env=env, cwd=site, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
    shipped = site / package / "backbones.json"
    checked = run_tlzoo("spec", f"{package}.drafts:DRAFTS", "--out", str(shipped), "--check", env={"PYTHONPATH": env["PYTHONPATH"]})
    assert checked.returncode == 0, checked.stderr
    assert f"{shipped} is current (1 backbones)" in checked.stdout
    listing = run_tlzoo("list-backbones", "--json", "--filter", backbone.split("/")[1], env={"PYTHONPATH": env["PYTHONPATH"]})
    [row] = json.loads(listing.stdout)
    assert row["id"] == backbone and row["plugin"] == example.removeprefix("tlzoo-")


def test_spec_check_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "backbones.json"
    stale.write_text(json.dumps({"backbones": []}))
    env = {"PYTHONPATH": str(REPO / "examples" / "tlzoo-tinynet")}
    done = run_tlzoo("spec", "tlzoo_tinynet.drafts:DRAFTS", "--out", str(stale), "--check", env=env)
    assert done.returncode == 1 and "out of date: torch/tinynet: missing from backbones.json" in done.stderr
    written = run_tlzoo("spec", "tlzoo_tinynet.drafts:DRAFTS", "--out", str(stale), env=env)
    assert written.returncode == 0, written.stderr
    [spec] = json.loads(stale.read_text())["backbones"]
    assert (spec["feature_dim"], spec["num_params"], len(spec["units"])) == (32, 14496, 3)


def test_plugins_written_for_tlzoo_0_1_still_load():
    """The old import location of the Keras helper works, with a DeprecationWarning."""
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import tlzoo.frameworks.keras_quiet\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
            "warnings.simplefilter('ignore')\nfrom tlzoo.frameworks.keras_quiet import keras\nprint(keras.__name__)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "warned: tlzoo.frameworks.keras_quiet moved to tlzoo_keras.quiet" in out.stdout
    assert out.stdout.strip().endswith("keras")


def test_third_party_plugin_lists_describes_and_builds(tinynet_site):
    env = {"PYTHONPATH": os.pathsep.join([str(tinynet_site), os.environ.get("PYTHONPATH", "")])}
    listing = run_tlzoo("list-backbones", "--json", "--filter", "torch/tiny*", env=env)
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
    assert "torch/tinynet" not in ids and len(ids) == 1171  # tlzoo's 20 and its timm plugin's 1,151
