"""Feature engines: onnxruntime on a checked, cached ONNX export of the frozen backbone gives the framework's
features, in both frameworks; engines are plugins, refused by name when missing or when they do not fit."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tlzoo import feature_engines
from tlzoo.backbone import get_backbone
from tlzoo.errors import UsageError
from tlzoo.registry import get_registry
from tlzoo.specs import FeatureEngineSpec
from tlzoo.training.config import TrainConfig

from .conftest import run_tlzoo
from .datagen import write_folder


def test_the_onnx_plugin_registers_the_onnxruntime_engine():
    assert feature_engines.names() == ["auto", "framework", "onnxruntime"]
    spec = get_registry().feature_engine("onnxruntime")
    assert spec.engine == "tlzoo_onnx.features:engine" and spec.prepared == "tlzoo_onnx.features:prepared"
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
    np.testing.assert_allclose(run(images), got, rtol=1e-6, atol=1e-6)  # it takes the uint8 batch


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


# ---------------------------------------------------------------- --feature-engine auto

MADE: list[str] = []  # the fake engines made, in order


def _direct(backbone, tap, cache_dir):  # type: ignore[no-untyped-def]
    """The framework's own computation, reached past a test's slowed-down ``backbone._run``."""
    MADE.append("direct")
    model = backbone.inference_model(tap)
    return lambda batch: type(backbone)._run(backbone, model, batch)


def _sleepy(backbone, tap, cache_dir):  # type: ignore[no-untyped-def]
    MADE.append("sleepy")
    model = backbone.inference_model(tap)

    def run(batch):  # type: ignore[no-untyped-def]
        time.sleep(0.1)
        return type(backbone)._run(backbone, model, batch)

    return run


def _broken(backbone, tap, cache_dir):  # type: ignore[no-untyped-def]
    MADE.append("broken")
    raise RuntimeError("boom")


def _ready(backbone, tap, cache_dir):  # type: ignore[no-untyped-def]
    return True


ENTRIES_READ: list[str] = []  # an entry can be costly to make (the onnxruntime engine hashes its export)


class _Reopenable:
    """A run with an ``entry``, as an engine that can be reopened without the framework has."""

    def __init__(self, run) -> None:  # type: ignore[no-untyped-def]
        self.run = run

    @property
    def entry(self):  # type: ignore[no-untyped-def]
        ENTRIES_READ.append("export.bin")
        return {"file": "export.bin"}

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        return self.run(batch)


def _sleepy_reopenable(backbone, tap, cache_dir):  # type: ignore[no-untyped-def]
    return _Reopenable(_sleepy(backbone, tap, cache_dir))


def _reopen(entry, cache_dir):  # type: ignore[no-untyped-def]
    raise AssertionError("not called here")


@pytest.fixture
def engines(monkeypatch):  # type: ignore[no-untyped-def]
    """Replace the installed engines with fake ones: ``engines(name=(factory, prepared))``."""
    MADE.clear()
    installed = get_registry().feature_engines
    for name in list(installed):
        monkeypatch.delitem(installed, name)

    def install(reopen: bool = False, **fakes):  # type: ignore[no-untyped-def]
        for name, (factory, prepared) in fakes.items():
            monkeypatch.setitem(installed, name, FeatureEngineSpec(
                name, f"{__name__}:{factory}", prepared=f"{__name__}:{prepared}" if prepared else "",
                reopen=f"{__name__}:_reopen" if reopen else ""))

    return install


def _auto_features(backbone, images, batch_size=4):  # type: ignore[no-untyped-def]
    run = feature_engines.runner(backbone, None, "auto", Path("unused"), images=len(images), batch_size=batch_size)
    return run, backbone.extract_features(images, batch_size=batch_size, run=run)


IMAGES = np.random.default_rng(3).integers(0, 256, size=(80, 32, 32, 3)).astype("uint8")  # 20 batches of 4


def test_auto_keeps_an_engine_that_measures_faster_than_the_framework(engines, monkeypatch):
    engines(direct=("_direct", "_ready"))
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    expected = backbone.extract_features(IMAGES, batch_size=4)
    slowed = backbone._run
    monkeypatch.setattr(backbone, "_run", lambda model, batch: (time.sleep(0.1), slowed(model, batch))[1])
    run, features = _auto_features(backbone, IMAGES)
    choice = run.choice
    assert choice.engine == "direct" and MADE == ["direct"]
    rates = choice.images_per_second
    assert set(rates) == {"framework", "direct"} and rates["direct"] > rates["framework"]
    # a warm-up and a timed batch on the framework, then the engine's warm-up, then three timed batches each in turn
    assert [len(run.times[n]) for n in ("framework", "direct")] == [1 + feature_engines.SAMPLES, feature_engines.SAMPLES]
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)
    assert choice.line().startswith("feature engine: direct (auto: ")
    assert "images/s against framework" in choice.line()


def test_auto_keeps_the_framework_when_the_engine_is_slower(engines):
    engines(sleepy=("_sleepy", "_ready"))
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    run, features = _auto_features(backbone, IMAGES)
    assert run.choice.engine == "framework" and MADE == ["sleepy"]
    assert run.choice.images_per_second["sleepy"] < run.choice.images_per_second["framework"]
    assert list(run.runners) == ["framework"]  # the engine not kept is let go
    np.testing.assert_allclose(features, backbone.extract_features(IMAGES, batch_size=4), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reopens", [True, False])
def test_a_later_run_starts_with_the_engine_that_finishes_the_job_first_its_start_included(engines, reopens):
    engines(reopen=reopens, sleepy=("_sleepy_reopenable", "_ready"))
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)

    def auto(loaded_seconds: float, remembers: bool = True):  # type: ignore[no-untyped-def]
        run = feature_engines.runner(backbone, None, "auto", Path("unused"), images=len(IMAGES), batch_size=4,
                                     loaded_seconds=loaded_seconds, remembers=remembers)  # fmt: skip
        backbone.extract_features(IMAGES, batch_size=4, run=run)
        return run

    ENTRIES_READ.clear()

    # the framework is faster per image (the engine sleeps 0.1 s a batch: 2 s over the 20 batches) ...
    quick = auto(0.0)
    assert quick.choice.engine == quick.remembered_engine == "framework" and quick.choice.next_run is None
    slow = auto(1000.0)  # ... but a framework that takes 1000 s to load loses the whole job to one that reopens
    assert slow.choice.engine == "framework"  # this run keeps it: it is loaded already
    start = slow.choice.start_seconds
    assert set(start) == {"framework", "sleepy"} and start["framework"] >= 1000.0
    if reopens:
        assert start["sleepy"] == slow.choice.prepare_seconds["sleepy"]  # its opening, without the framework's 1000 s
        assert slow.remembered_engine == slow.choice.next_run == "sleepy"
        assert slow.entry() == {"file": "export.bin"}  # taken before the engine was let go
        assert list(slow.runners) == ["framework"]
        assert slow.choice.line().endswith(
            f"; a later run of this job starts with sleepy, which opens in {start['sleepy']:.1f} s against the "
            f"framework's {start['framework']:.1f} s)")
        assert slow.choice.record()["next_run"] == "sleepy"
        assert ENTRIES_READ == ["export.bin"]
        unkept = auto(1000.0, remembers=False)  # --no-cache, random weights: the same choice, no entry made
        assert unkept.choice.next_run == "sleepy" and unkept.entry() is None and ENTRIES_READ == ["export.bin"]
    else:  # an engine that needs the framework built starts after it: nothing to gain
        assert start["sleepy"] == start["framework"] + slow.choice.prepare_seconds["sleepy"]
        assert slow.remembered_engine == "framework" and slow.choice.next_run is None and slow.entry() is None


def test_auto_prepares_an_engine_only_when_the_job_is_long_enough_to_pay_for_it(engines, monkeypatch):
    engines(direct=("_direct", None))  # no prepared() probe: treated as not prepared
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    run, _ = _auto_features(backbone, IMAGES)
    assert MADE == [] and run.choice.engine == "framework"
    why = run.choice.passed_over["direct"]
    assert re.fullmatch(r"is not prepared for this backbone, and the 76 images left take the framework about \d+ s "
                        r"here, under the 60 s its preparation pays from", why), why
    monkeypatch.setattr(feature_engines, "PREPARE_FROM_SECONDS", 0.0)
    run, _ = _auto_features(backbone, IMAGES)
    assert MADE == ["direct"] and set(run.choice.images_per_second) == {"framework", "direct"}
    assert "direct" in run.choice.prepare_seconds


def test_auto_passes_over_an_engine_that_fails_and_runs_on(engines):
    engines(broken=("_broken", "_ready"))
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    run, features = _auto_features(backbone, IMAGES)
    assert MADE == ["broken"] and run.choice.engine == "framework"
    assert run.choice.passed_over == {"broken": "cannot run: failed (RuntimeError: boom)"}
    assert run.choice.line() == "feature engine: framework (auto: broken cannot run: failed (RuntimeError: boom))"
    np.testing.assert_allclose(features, backbone.extract_features(IMAGES, batch_size=4), rtol=1e-6, atol=1e-6)


def test_auto_runs_a_job_too_small_to_measure_on_the_framework_alone(engines):
    engines(direct=("_direct", "_ready"))
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    small = IMAGES[: 4 * feature_engines.MIN_BATCHES - 1]
    run, _ = _auto_features(backbone, small)
    assert MADE == [] and run.choice.engine == "framework" and run.choice.line() is None


def test_train_with_auto_measures_the_cached_onnxruntime_export_against_the_framework(tmp_path):
    data = write_folder(tmp_path / "data", per_class=12)  # 36 images: 18 batches of 2, enough to measure on
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    common = ["train", "-b", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(data),
              "--out-dir", str(tmp_path / "runs"), "--batch-size", "2"]  # fmt: skip
    small = run_tlzoo(*common, "--name", "small", "--json", env=env)  # the default engine is auto
    assert small.returncode == 0, small.stderr[-2000:]
    first = json.loads((tmp_path / "runs" / "small" / "metrics.json").read_text())
    assert first["feature_engine"] == "framework" and first["feature_cache"] == "miss"
    assert "is not prepared for this backbone" in first["feature_engine_auto"]["passed_over"]["onnxruntime"]
    assert not list((tmp_path / "cache").rglob("*.onnx"))  # a short job does not pay for an export
    exported = run_tlzoo(*common, "--name", "ort", "--feature-engine", "onnxruntime", env=env)
    assert exported.returncode == 0, exported.stderr[-2000:]
    auto = run_tlzoo(*common, "--name", "auto", "--no-cache", env=env)
    assert auto.returncode == 0, auto.stderr[-2000:]
    metrics = json.loads((tmp_path / "runs" / "auto" / "metrics.json").read_text())
    record = metrics["feature_engine_auto"]
    assert set(record["images_per_second"]) == {"framework", "onnxruntime"}
    assert metrics["feature_engine"] == record["engine"] == max(record["images_per_second"], key=record["images_per_second"].get)
    assert f"feature engine: {record['engine']} (auto: " in auto.stderr + auto.stdout
    assert metrics["accuracy"] == json.loads(small.stdout)["accuracy"]


def test_a_remembered_framework_win_is_not_measured_again(engines, monkeypatch):
    from tlzoo.engine_memory import Remembered

    engines(direct=("_direct", "_ready"))
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    won = Remembered("framework", {"framework": 300.0, "direct": 200.0}, "2026-12-01T10:00:00+00:00",
                     start_seconds={"framework": 2.5, "direct": 3.25})  # fmt: skip
    run = feature_engines.runner(backbone, None, "auto", Path("unused"), images=len(IMAGES), batch_size=4, remembered=won)
    features = backbone.extract_features(IMAGES, batch_size=4, run=run)
    assert MADE == [] and run.choice.engine == "framework" and run.choice.images_per_second == {}
    assert run.choice.line() == ("feature engine: framework (auto: remembered from 2026-12-01: 300 images/s after 2.5 s "
                                 "to start against direct 200 images/s after 3.2 s to start, measured on an earlier "
                                 "run of this backbone on this machine)")  # fmt: skip
    np.testing.assert_allclose(features, backbone.extract_features(IMAGES, batch_size=4), rtol=1e-6, atol=1e-6)


def test_auto_memory_is_keyed_by_the_job_and_the_machine_and_keeps_the_newest_records(tmp_path, monkeypatch):
    from tlzoo import engine_memory

    job = {"backbone": "torch/resnet18", "weights": "ab" * 32, "tap": None, "size": [32, 32], "batch": 32, "device": "auto"}
    assert engine_memory.key(job) == engine_memory.key(dict(job))
    assert engine_memory.key(job) != engine_memory.key({**job, "batch": 64})
    monkeypatch.setattr(engine_memory, "_cpu_name", lambda: "another processor")
    other_machine = engine_memory.key(job)
    monkeypatch.undo()
    assert other_machine != engine_memory.key(job)
    assert engine_memory.recall(tmp_path, "missing") is None
    (tmp_path / engine_memory.FILE).write_text("not json")
    assert engine_memory.recall(tmp_path, "k") is None
    monkeypatch.setattr(engine_memory, "KEEP", 3)
    for i in range(5):
        engine_memory.remember(tmp_path, f"k{i}", "onnxruntime", {"framework": 1.0, "onnxruntime": 2.0 + i}, None,
                               {"framework": 2.5, "onnxruntime": 0.125})  # fmt: skip
    kept = json.loads((tmp_path / engine_memory.FILE).read_text())
    assert sorted(kept) == ["k2", "k3", "k4"]
    recalled = engine_memory.recall(tmp_path, "k4")
    assert recalled.images_per_second == {"framework": 1.0, "onnxruntime": 6.0}
    assert recalled.start_seconds == {"framework": 2.5, "onnxruntime": 0.12}
    kept["k4"]["start_seconds"] = {"framework": "slow"}  # malformed: measured again
    (tmp_path / engine_memory.FILE).write_text(json.dumps(kept))
    assert engine_memory.recall(tmp_path, "k4") is None
    del kept["k4"]["start_seconds"]  # a record from before start times were kept
    (tmp_path / engine_memory.FILE).write_text(json.dumps(kept))
    assert engine_memory.recall(tmp_path, "k4").start_seconds == {}


@pytest.mark.parametrize("tap", [None, "5"])
def test_on_the_cpu_the_frozen_backbone_runs_as_one_onednn_graph_checked_against_eager(tap):
    from tlzoo_torch.backend import OptimizedForCpu, fold_batch_norms

    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    unit = backbone.resolve_tap(tap)
    model = backbone.inference_model(unit)
    assert isinstance(model, OptimizedForCpu)
    graph = str(model.scripted.graph)
    assert "mkldnn_convolution" in graph and "aten::batch_norm" not in graph  # oneDNN's, batch norms folded
    images = np.random.default_rng(5).integers(0, 256, size=(5, 32, 32, 3)).astype("uint8")
    eager = backbone._run(fold_batch_norms(backbone.feature_model(unit)), backbone.preprocess(images))
    got = backbone.extract_features(images, tap=unit, batch_size=2)  # batches of 2 and 1 through one graph
    assert got.shape == eager.shape == (5, 512 if tap is None else 64)
    np.testing.assert_allclose(got, eager, rtol=1e-5, atol=1e-5 * float(np.abs(eager).max()))


def test_the_onednn_graph_is_refused_when_its_features_drift_or_it_cannot_be_made(monkeypatch):
    import torch
    from tlzoo_torch.backend import OptimizedForCpu, optimized_for_cpu

    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    images = np.random.default_rng(6).integers(0, 256, size=(3, 32, 32, 3)).astype("uint8")
    expected = backbone.extract_features(images)
    optimize = torch.jit.optimize_for_inference

    class Drifting(torch.nn.Module):  # a graph whose features are 1 % off: the check must keep the eager model
        def __init__(self, graph) -> None:  # type: ignore[no-untyped-def]
            super().__init__()
            self.graph = graph

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.graph(x) * 1.01

    monkeypatch.setattr(torch.jit, "optimize_for_inference", lambda m: Drifting(optimize(m)))
    eager = backbone.inference_model(None)
    assert not isinstance(eager, OptimizedForCpu)
    np.testing.assert_allclose(backbone.extract_features(images), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(optimized_for_cpu(backbone, eager, tolerance=0.02), OptimizedForCpu)  # within a looser check

    def refuses(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("TorchScript cannot trace this model")

    monkeypatch.setattr(torch.jit, "trace", refuses)
    assert not isinstance(backbone.inference_model(None), OptimizedForCpu)  # runs eagerly, no error
    np.testing.assert_allclose(backbone.extract_features(images), expected, rtol=1e-5, atol=1e-5)


def test_reduced_precision_is_kept_only_where_the_features_stay_close():
    import torch
    from tlzoo_torch.backend import reduced_precision

    # On a GPU the framework engine tries fp16; bfloat16 exercises the same check on this CPU.
    from tlzoo_torch.backend import fold_batch_norms

    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    model = fold_batch_norms(backbone.feature_model(None))  # what inference_model moves to the GPU
    images = np.random.default_rng(4).integers(0, 256, size=(3, 32, 32, 3)).astype("uint8")
    expected = backbone.extract_features(images)
    low = reduced_precision(backbone, model, dtype=torch.bfloat16, tolerance=0.1)
    assert low is not model and next(low.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the fp32 model is left as it was
    got = backbone.extract_features(images, run=lambda batch: backbone._run(low, batch))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0.1, atol=0.1 * float(np.abs(expected).max()))
    assert reduced_precision(backbone, model, dtype=torch.bfloat16, tolerance=1e-7) is model  # the check refuses it


def test_the_onnxruntime_engine_falls_back_to_the_next_plan_when_a_check_fails(tmp_path, monkeypatch):
    import tlzoo_onnx.features as features

    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    feature_engines.runner(backbone, None, "onnxruntime", tmp_path)
    [path] = tmp_path.glob("*.onnx")
    mtime = path.stat().st_mtime_ns
    opened = []
    real = features._runner
    # a faster plan whose features miss its check (as fp16 would, past HALF_ATOL), then fp32
    monkeypatch.setattr(features, "_plans", lambda: [([features.CPU, "fast"], -1.0), ([features.CPU], features.ATOL)])
    monkeypatch.setattr(features, "_runner", lambda p, layout, providers: opened.append(providers) or real(p, layout, [features.CPU]))
    run = feature_engines.runner(backbone, None, "onnxruntime", tmp_path)
    assert opened == [[features.CPU, "fast"], [features.CPU]]
    assert path.stat().st_mtime_ns == mtime  # the cached file is kept: the plan failed, not the file
    images = np.zeros((2, 32, 32, 3), np.uint8)
    np.testing.assert_allclose(backbone.extract_features(images, run=run), backbone.extract_features(images),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("preset", ["TORCHVISION_IMAGENET", "KERAS_CAFFE", "KERAS_TF"])
def test_the_framework_engine_takes_uint8_and_normalizes_where_its_model_runs(preset, monkeypatch, tmp_path):
    import torch
    import tlzoo_torch.backend as backend

    from tlzoo import specs
    from tlzoo.images.normalize import normalize

    prep = getattr(specs, preset)
    images = np.random.default_rng(4).integers(0, 256, size=(6, 32, 32, 3)).astype("uint8")
    # on a device, by the host's arithmetic: the same values (a GPU's float32 ops round as numpy's do)
    on_device = backend.normalized_on(images, prep, torch.device("cpu"))
    assert on_device.dtype == torch.float32 and on_device.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(on_device.permute(0, 2, 3, 1).numpy(), normalize(images, prep))
    backbone = get_backbone("torch/resnet18", input_size=32, seed=0)
    run = feature_engines.runner(backbone, None, "framework", tmp_path, device="cpu")
    assert run.takes_uint8
    host = run(images)  # on the CPU the host normalizes (numpy's table lookup)
    seen = []
    real = backend.normalized_on
    monkeypatch.setattr(backend, "normalized_on", lambda *a: (seen.append(a[2]), real(*a))[1])
    monkeypatch.setattr(backend, "HOST_NORMALIZED", ())  # the path a GPU takes, on the CPU
    device_side = run(images)
    assert [str(d) for d in seen] == ["cpu"]
    np.testing.assert_allclose(device_side, host, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(host, backbone._run(backbone.inference_model(None, "cpu"), backbone.preprocess(images)),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
