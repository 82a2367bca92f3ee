"""Feature engines: onnxruntime on a checked, cached ONNX export of the frozen backbone gives the framework's
features, in both frameworks; engines are plugins, refused by name when missing or when they do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tlzoo import feature_engines
from tlzoo.backbone import get_backbone
from tlzoo.errors import UsageError
from tlzoo.registry import get_registry
from tlzoo.training.config import TrainConfig

from .conftest import run_tlzoo
from .datagen import write_folder


def test_the_onnx_plugin_registers_the_onnxruntime_engine():
    assert feature_engines.names() == ["framework", "onnxruntime"]
    spec = get_registry().feature_engine("onnxruntime")
    assert spec.engine == "tlzoo_onnx.features:engine"
    assert get_registry().owners["feature_engine onnxruntime"] == "onnx"
    with pytest.raises(UsageError, match="--feature-engine 'onnxruntim' is not installed. Did you mean 'onnxruntime'"):
        feature_engines.check("onnxruntim")


@pytest.mark.parametrize(("backbone_id", "tap"), [("torch/resnet18", None), ("torch/resnet18", "5"), ("keras/vgg16", "3")])
def test_onnxruntime_features_equal_the_frameworks_and_the_export_is_cached(backbone_id, tap, tmp_path):
    backbone = get_backbone(backbone_id, input_size=32, seed=0)
    unit = backbone.resolve_tap(tap)
    images = np.random.default_rng(2).integers(0, 256, size=(5, 32, 32, 3)).astype("uint8")
    ours = backbone.extract_features(images, tap=unit, batch_size=2)
    run = feature_engines.runner(backbone, unit, "onnxruntime", tmp_path)
    exported = list(tmp_path.glob("*.onnx"))
    assert len(exported) == 1 and exported[0].name.startswith(backbone_id.replace("/", "-"))
    theirs = backbone.extract_features(images, tap=unit, batch_size=2, run=run)
    assert theirs.shape == ours.shape and theirs.dtype == np.float32
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)
    mtime = exported[0].stat().st_mtime_ns
    feature_engines.runner(backbone, unit, "onnxruntime", tmp_path)  # reused, not exported again
    assert exported[0].stat().st_mtime_ns == mtime and len(list(tmp_path.glob("*.onnx"))) == 1


def _norms(module):  # type: ignore[no-untyped-def]
    import torch

    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize(("backbone_id", "tap"), [("torch/mobilenet_v2", None), ("torch/resnet18", "5")])
def test_torch_features_run_on_a_copy_with_batch_norms_folded_into_the_convolutions(backbone_id, tap):
    import torch

    backbone = get_backbone(backbone_id, input_size=32, seed=0)
    unit = backbone.resolve_tap(tap)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics far from 0 and 1, so that folding them changes the convolutions' weights
        for norm in _norms(backbone.model):
            for t in (norm.running_mean, norm.weight, norm.bias):
                t.copy_(torch.randn(t.shape, generator=generator))
            norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) + 0.5)
    own = len(_norms(backbone.model))
    folded = backbone.inference_model(unit)
    assert own > 0 and _norms(folded) == [] and len(_norms(backbone.model)) == own  # the backbone keeps its own
    images = np.random.default_rng(3).integers(0, 256, size=(4, 32, 32, 3)).astype("uint8")
    expected = backbone._run(backbone.feature_model(unit), backbone.preprocess(images))
    got = backbone.extract_features(images, tap=unit, batch_size=2)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    # The framework engine of a training run is the same folded copy.
    run = feature_engines.runner(backbone, unit, "framework", Path("unused"), device="cpu")
    np.testing.assert_allclose(run(backbone.preprocess(images)), got, rtol=1e-6, atol=1e-6)


def test_a_model_torch_fx_cannot_trace_runs_unfolded():
    import torch
    from tlzoo_torch.backend import fold_batch_norms

    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.norm(self.conv(x))
            return y if y.sum() > 0 else -y  # data-dependent control flow: torch.fx refuses it

    model = Branchy().eval()
    assert fold_batch_norms(model) is model
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert fold_batch_norms(plain) is plain  # nothing to fold: no copy


def test_the_framework_engine_builds_its_model_on_the_device_it_is_given(monkeypatch, tmp_path):
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    asked = []
    build = backbone.inference_model

    def recording(tap=None, device=None):  # type: ignore[no-untyped-def]
        asked.append((tap, device))
        return build(tap, device)

    monkeypatch.setattr(backbone, "inference_model", recording)
    feature_engines.runner(backbone, 3, "framework", tmp_path, device="cpu")
    assert asked == [(3, "cpu")]


def test_a_damaged_cached_export_is_replaced(tmp_path):
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    feature_engines.runner(backbone, None, "onnxruntime", tmp_path)
    [path] = tmp_path.glob("*.onnx")
    path.write_bytes(b"not an onnx file")
    run = feature_engines.runner(backbone, None, "onnxruntime", tmp_path)
    images = np.zeros((1, 32, 32, 3), np.uint8)
    np.testing.assert_allclose(backbone.extract_features(images, run=run), backbone.extract_features(images),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    assert path.stat().st_size > 1000


def test_the_engine_is_a_feature_extract_setting():
    with pytest.raises(UsageError, match="--feature-engine does not fit --strategy fine-tune"):
        TrainConfig(strategy="fine-tune", feature_engine="onnxruntime").checked({"strategy", "feature_engine"})


def test_train_with_the_onnxruntime_engine_matches_the_framework_run(tmp_path):
    data = write_folder(tmp_path / "data", per_class=6)
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    common = ["train", "-b", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(data),
              "--out-dir", str(tmp_path / "runs"), "--json"]  # fmt: skip
    framework = run_tlzoo(*common, "--name", "fw", env=env)
    assert framework.returncode == 0, framework.stderr[-2000:]
    onnx = run_tlzoo(*common, "--name", "ort", "--feature-engine", "onnxruntime", env=env)
    assert onnx.returncode == 0, onnx.stderr[-2000:]
    a, b = json.loads(framework.stdout), json.loads(onnx.stdout)
    assert a["accuracy"] == b["accuracy"] and abs(a["log_loss"] - b["log_loss"]) < 1e-3
    metrics = json.loads((tmp_path / "runs" / "ort" / "metrics.json").read_text())
    assert metrics["feature_engine"] == "onnxruntime" and metrics["feature_cache"] == "miss"  # its own cache key
    assert len(list((tmp_path / "cache").rglob("*.onnx"))) == 1
