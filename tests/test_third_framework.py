"""A third framework registered by a plugin (tests/numpy_framework.py) runs through the real CLI: listed,
described, trained (feature extraction), evaluated and predicted, with core untouched and neither torch nor
TensorFlow imported; what it cannot do is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .datagen import write_folder, write_multilabel

HERE = Path(__file__).parent
# Runs the CLI in-process, then says which frameworks got imported.
RUNNER = """
import sys
from tlzoo.cli.app import main
sys.argv = ["tlzoo", *sys.argv[1:]]
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
loaded = [m for m in ("torch", "tensorflow", "keras", "onnxruntime") if m in sys.modules]
print("IMPORTED:" + ",".join(loaded), file=sys.stderr)
sys.exit(code)
"""


def tlzoo_numpy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "TLZOO_PLUGINS": "numpy_framework",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)  # fmt: skip
    imported = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED:")]
    assert imported == ["IMPORTED:"], done.stderr[-2000:]  # no framework (or onnxruntime) was imported
    return done


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("numpy-framework")
    write_folder(root / "data", per_class=10, size=32)
    write_multilabel(root / "tagged", n=24)
    return root


def test_listed_and_described_by_the_plugin(work: Path) -> None:
    listed = tlzoo_numpy("list-backbones", "--framework", "numpy", "--json", cwd=work)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["id"] == "numpy/randproj" and row["feature_dim"] == 16
    described = tlzoo_numpy("describe", "randproj", "--build", "--json", cwd=work)
    assert described.returncode == 0, described.stderr
    info = json.loads(described.stdout)
    assert info["built"]["units"] == 1 and info["built"]["num_params"] == 768 and info["built"]["feature_dim"] == 16
    plugins = tlzoo_numpy("plugins", "--json", cwd=work)
    [status] = [p for p in json.loads(plugins.stdout) if p["name"] == "numpy_framework"]
    assert status["frameworks"] == ["numpy"] and status["backbones"] == ["numpy/randproj"] and status["status"] == "ok"


def test_feature_extract_train_evaluate_predict(work: Path) -> None:
    trained = tlzoo_numpy("train", "--backbone", "randproj", "--data", "data", "--name", "np", "--json",
                          "--head", "logreg-ovr", "--weights", "none", "--seed", "3", cwd=work)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    run = work / "runs" / "np"
    meta = json.loads((run / "classifier.json").read_text())
    assert meta["framework"] == "numpy" and meta["model_file"] == "model.npz" and meta["format_version"] == 2
    assert meta["plugin"]["name"] == "numpy_framework"
    # The colour classes are separable from a 4x4 pooled image: the linear head learns them.
    assert summary["accuracy"] == 1.0
    evaluated = tlzoo_numpy("evaluate", "runs/np", "--data", "data", "--json", cwd=work)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == 1.0
    predicted = tlzoo_numpy("predict", "runs/np", "data/red", "--top-k", "1", "--json", cwd=work)
    assert predicted.returncode == 0, predicted.stderr
    assert {row["top"][0]["label"] for row in json.loads(predicted.stdout)["predictions"]} == {"red"}


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--backbone", "randproj", "--data", "data", "--strategy", "fine-tune", "--epochs", "1"], "no optimizer"),
        (["train", "--backbone", "randproj", "--data", "data", "--head", "mlp"], "no optimizer"),
        (["train", "--backbone", "randproj", "--data", "data", "--feature-engine", "onnxruntime"],
         "the numpy framework plugin has no ONNX converter; use --feature-engine framework"),
        (["train", "--backbone", "randproj", "--data", "data", "--device", "cuda"], "CPU only"),
        (["train", "--backbone", "randproj", "--data", "data", "--threads", "2"],
         "cannot set the number of threads; leave --threads out"),
        (["train", "--backbone", "randproj", "--data", "tagged/labels.csv", "--strategy", "fine-tune", "--epochs", "1"],
         "numpy/randproj: the numpy engine cannot train on several labels an image"),
    ],
    ids=["fine-tune", "mlp-head", "onnxruntime-engine", "device", "threads", "multi-label"],
)
def test_what_it_cannot_do_is_refused_in_one_line(work: Path, args: list[str], words: str) -> None:
    before = sorted(p.name for p in (work / "runs").iterdir()) if (work / "runs").is_dir() else []
    done = tlzoo_numpy(*args, "--weights", "none", "--name", "refused", cwd=work)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("Error:") == 1
    after = sorted(p.name for p in (work / "runs").iterdir()) if (work / "runs").is_dir() else []
    assert after == before  # nothing half-written


def test_export_without_a_converter_is_refused(work: Path) -> None:
    if not (work / "runs" / "np").is_dir():
        test_feature_extract_train_evaluate_predict(work)
    done = tlzoo_numpy("export", "onnx", "runs/np", cwd=work)
    assert done.returncode == 2
    assert "the numpy framework plugin cannot convert models to ONNX" in done.stderr
    assert not (work / "runs" / "np" / "model.onnx").exists()


def test_run_format_versions(work: Path, tmp_path: Path) -> None:
    """A run written before classifier.json had format_version loads as format 1; a newer format is refused."""
    import shutil

    if not (work / "runs" / "np").is_dir():
        test_feature_extract_train_evaluate_predict(work)
    old, new = tmp_path / "old", tmp_path / "new"
    for target, change in ((old, lambda m: m.pop("format_version")), (new, lambda m: m.update(format_version=99))):
        shutil.copytree(work / "runs" / "np", target)
        meta = json.loads((target / "classifier.json").read_text())
        change(meta)
        (target / "classifier.json").write_text(json.dumps(meta))
    loaded = tlzoo_numpy("evaluate", str(old), "--data", "data", "--json", cwd=work)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["accuracy"] == 1.0
    refused = tlzoo_numpy("evaluate", str(new), "--data", "data", cwd=work)
    assert refused.returncode == 2
    assert "written by a newer tlzoo (run format 99" in refused.stderr and "Traceback" not in refused.stderr


def test_a_wrong_spec_is_a_clear_error_naming_plugin_and_field(tmp_path: Path) -> None:
    """The spec is checked against the model at the first build: a wrong feature_dim names plugin and field."""
    import dataclasses

    sys.path.insert(0, str(HERE))
    try:
        import numpy_framework
        import tlzoo
        from tlzoo.backbone import get_backbone
        from tlzoo.errors import PluginError

        class WrongSpec:
            __name__ = "wrong-spec"

            @tlzoo.hookimpl
            def register_frameworks(self):
                return numpy_framework.register_frameworks()

            @tlzoo.hookimpl
            def register_backbones(self):
                return [dataclasses.replace(numpy_framework.SPEC, feature_dim=99, num_params=5)]

        tlzoo.register_plugin(WrongSpec(), name="wrong-spec")
        with pytest.raises(PluginError) as caught:
            get_backbone("numpy/randproj")
        message = str(caught.value)
        assert message.startswith("plugin 'wrong-spec': the spec of numpy/randproj does not match")
        assert "feature_dim is 99 but the model's pooled features have 16" in message
        assert "num_params is 5 but the model has 768" in message
    finally:
        sys.path.remove(str(HERE))
