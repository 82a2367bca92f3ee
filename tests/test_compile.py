"""--compile: the training step compiled (torch.compile; XLA for Keras) where asked or where it pays (auto: on a
GPU), refused by an engine that cannot compile, and given up in one recorded line when compiling fails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlzoo.errors import UsageError
from tlzoo.training.config import TrainConfig
from tlzoo.training.run import train

from .datagen import write_folder


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny-compile") / "data", per_class=10)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))


def config(data, tmp_path, name, **kw):  # type: ignore[no-untyped-def]
    return TrainConfig(**{"data": str(data), "image_size": 32, "weights": "none", "epochs": 2, "batch_size": 8,
                          "patience": 0, "strategy": "fine-tune", "out_dir": str(tmp_path / "runs"), "name": name,
                          **kw})  # fmt: skip


def test_torch_compiled_training_follows_the_eager_one_step_for_step(tiny_data, tmp_path, monkeypatch):
    import tlzoo_torch.train as torch_train

    # dynamo captures the model as the GPU path would; the "eager" backend runs the captured graph without
    # inductor's code generation (tens of seconds a model on this CPU), so the steps must match eager's.
    monkeypatch.setattr(torch_train, "COMPILE_BACKEND", "eager")
    eager = train(config(tiny_data, tmp_path, "eager", backbone="torch/resnet18", compile="off"))
    compiled = train(config(tiny_data, tmp_path, "compiled", backbone="torch/resnet18", compile="on"))
    assert eager.summary["compile"] == {"asked": "off", "compiled": False}
    assert compiled.summary["compile"] == {"asked": "on", "compiled": True}
    losses = [[r["loss"] for r in run.history] for run in (compiled, eager)]
    np.testing.assert_allclose(losses[0][0], losses[1][0], rtol=1e-5)  # the first epoch: the same steps
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-2)  # then sums in another order, drifting a little
    assert compiled.metrics["accuracy"] == eager.metrics["accuracy"]
    # the checkpoint is the plain model's (no compiled wrapper's names): the run predicts like any other
    import tlzoo

    image = tiny_data / "red" / "000.png"
    assert tlzoo.predict(compiled.run_dir, [image])[0].top[0][0] == tlzoo.predict(eager.run_dir, [image])[0].top[0][0]
    recorded = json.loads((compiled.run_dir / "metrics.json").read_text())
    assert recorded["compile"] == {"asked": "on", "compiled": True}


def test_auto_compiles_on_a_gpu_only(tiny_data, tmp_path):
    result = train(config(tiny_data, tmp_path, "auto", backbone="torch/resnet18", epochs=1))
    assert result.summary["compile"] == {"asked": "auto", "compiled": False}  # this machine has no GPU


def _failing_backend(graph, example_inputs):  # type: ignore[no-untyped-def]
    raise RuntimeError("no compiler here")


def test_a_compile_that_fails_is_one_line_under_on_and_recorded_under_auto(tiny_data, tmp_path, monkeypatch):
    import tlzoo_torch.train as torch_train

    monkeypatch.setattr(torch_train, "COMPILE_BACKEND", _failing_backend)
    with pytest.raises(UsageError, match=r"--compile on: compiling the training step failed here \(.*no compiler here"):
        train(config(tiny_data, tmp_path, "on", backbone="torch/resnet18", compile="on"))
    assert not (tmp_path / "runs" / "on").exists()  # nothing half-written
    # auto decides on a GPU: stand one in, as far as the engine's choice goes
    monkeypatch.setattr(torch_train.TorchEngine, "device", property(lambda self: "cuda:0"))
    short = train(config(tiny_data, tmp_path, "short", backbone="torch/resnet18", epochs=1))
    record = short.summary["compile"]  # a run shorter than auto's 20 timed eager steps never compiles
    assert record["asked"] == "auto" and record["compiled"] is False and "note" not in record
    assert record["why"] == "the run ended within the 20 eager steps auto times before deciding: eager"
    # A run auto decides to compile (its probe shortened, any run long enough) whose compile fails.
    from tlzoo.training import compile_payoff

    monkeypatch.setattr(compile_payoff, "WARM_STEPS", 0)
    monkeypatch.setattr(compile_payoff, "PROBE_STEPS", 1)
    monkeypatch.setattr(compile_payoff, "NO_RECORD_MIN_S", 0.0)
    result = train(config(tiny_data, tmp_path, "auto", backbone="torch/resnet18", epochs=1))
    record = result.summary["compile"]
    assert record["asked"] == "auto" and record["compiled"] is False
    assert "no compile time recorded" in record["why"]
    assert record["note"].startswith("compiling failed, trained uncompiled (") and "no compiler here" in record["note"]


def test_keras_compiles_its_update_with_xla_and_augments_outside_it(tiny_data, tmp_path):
    # RandomZoom's image op has no XLA kernel on the CPU: the augmentation stays outside the compiled update
    augmented = train(config(tiny_data, tmp_path, "augmented", backbone="keras/mobilenet_v2", compile="on", epochs=1))
    assert augmented.summary["compile"] == {"asked": "on", "compiled": True}
    # One batch an epoch (24 training images): the first epoch's loss is the initial weights' on the same batch,
    # the second's the loss after one update. Compiled and plain must agree on both. More steps on a
    # random-init network at 32 px (1x1 maps into batch norm) amplify float reorderings into 10-30 % apart.
    exact = {"dropout": 0.0, "augment": "none", "backbone": "keras/mobilenet_v2", "batch_size": 32}
    plain = train(config(tiny_data, tmp_path, "plain", compile="off", **exact))
    xla = train(config(tiny_data, tmp_path, "xla", compile="on", **exact))
    assert xla.summary["compile"] == {"asked": "on", "compiled": True}
    assert plain.summary["compile"] == {"asked": "off", "compiled": False}
    losses = [[row["loss"] for row in run.history] for run in (xla, plain)]
    assert len(losses[0]) == len(losses[1]) == 2
    np.testing.assert_allclose(losses[0][0], losses[1][0], rtol=1e-4)  # measured 3e-6 at most over 8 datasets
    np.testing.assert_allclose(losses[0][1], losses[1][1], rtol=1e-2)  # measured 7e-4 at most
    assert losses[1][1] != losses[1][0]  # the update changed the model


def test_an_engine_that_cannot_compile_refuses_on_and_config_files_say_on_plainly(tmp_path):
    from tlzoo.backbone import get_backbone

    from .numpy_framework import NumpyEngine

    engine = NumpyEngine(get_backbone("torch/resnet18", input_size=32, seed=0), 3, tap=None, dropout=0.0, seed=0)
    with pytest.raises(UsageError, match="--compile on: the torch training engine cannot compile its training step"):
        engine.set_compile("on")
    engine.set_compile("auto")
    assert engine.compiles is False and engine.compile_record() == {"asked": "auto", "compiled": False}
    path = tmp_path / "c.yaml"
    path.write_text("compile: on\n")  # YAML reads a bare on as true
    assert TrainConfig.load(path).checked({"compile"})[0].compile == "on"
    with pytest.raises(UsageError, match="--compile 'sometimes' is not known"):
        TrainConfig(compile="sometimes").validate()


@pytest.mark.parametrize("batch_size", [3, 8], ids=["probe-within-an-epoch", "probe-across-epochs"])
def test_the_compile_probe_times_steps_whether_or_not_they_cross_an_epoch(tiny_data, tmp_path, monkeypatch, batch_size):
    """--compile auto's probe with an injected clock (one second a step): the step time it weighs is one second
    whether its warm-up and timed steps fall in one epoch or cross several (it was the seconds since boot)."""
    import tlzoo_torch.train as torch_train

    from tlzoo.training import compile_payoff

    monkeypatch.setattr(compile_payoff, "WARM_STEPS", 2)
    monkeypatch.setattr(compile_payoff, "PROBE_STEPS", 6)
    monkeypatch.setattr(torch_train.TorchEngine, "device", property(lambda self: "cuda:0"))  # auto decides on a GPU
    monkeypatch.setattr(torch_train.TorchEngine, "_clock", lambda self: float(self._steps_run))
    seen: list[float] = []
    monkeypatch.setattr(torch_train.TorchEngine, "decide_compile",
                        lambda self, step_seconds, steps_done, batch: seen.append(step_seconds) or False)  # fmt: skip
    # 24 training images: at batch 3, 8 steps an epoch, the probe's steps 2..6 within the first; at batch 8,
    # 3 steps an epoch, they run from the first epoch into the third
    train(config(tiny_data, tmp_path, f"b{batch_size}", backbone="torch/resnet18", epochs=3, batch_size=batch_size))
    assert seen == [1.0]
