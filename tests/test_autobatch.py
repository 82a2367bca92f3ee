"""--batch-size auto: the largest training batch that fits the device's memory, chosen from measured steps (injected
here: this machine has no GPU), the learning rate scaled with one epoch of warm-up; on the CPU it stays 32."""

from __future__ import annotations

import json

import pytest

from tlzoo.errors import UsageError
from tlzoo.training import autobatch
from tlzoo.training.config import SETTINGS_BY_NAME, TrainConfig
from tlzoo.training.reporter import Reporter
from tlzoo.training.run import TrainingInterrupted, train

from .conftest import run_tlzoo
from .datagen import write_folder

MiB, GiB = 2**20, 2**30


def _linear(per_image: int, base: int):  # type: ignore[no-untyped-def]
    return lambda batch: base + per_image * batch


def test_the_batch_is_the_largest_whose_fitted_step_fits_the_fraction_rounded_to_eight():
    choice = autobatch.choose(_linear(10 * MiB, 100 * MiB), 2 * GiB, 10_000, fixed_bytes=50 * MiB)
    # 0.6 x 2048 MiB = 1228.8 MiB for steps of 150 + 10 b MiB: b = 107.88 -> 107 -> 104 (a multiple of 8)
    assert choice.batch_size == 104 and choice.lr_scale == 104 / 32 and choice.warms_up
    assert choice.measured == {b: (150 + 10 * b) * MiB for b in (2, 4, 8, 16)}
    assert choice.cap == 1024 and "60% of the 2.0 GiB free: 10.0 MiB an image over 150 MiB" in choice.reason
    assert choice.line(1e-3) == (f"--batch-size auto: 104 ({choice.reason}); learning rate 0.001 x 104/32 = 0.00325, "
                                 "reached over one epoch of warm-up")  # fmt: skip
    assert choice.record()["step_bytes"]["16"] == 310 * MiB and choice.record()["fraction"] == 0.6


def test_the_batch_is_capped_by_the_training_set_and_by_1024():
    assert autobatch.choose(_linear(10 * MiB, 100 * MiB), 2 * GiB, 400).batch_size == 48  # 400 / 8 = 50 -> 48
    assert "capped at 50 (training images / 8, not below 32 or the training set's size, at most 1024)" in autobatch.choose(_linear(10 * MiB, 0), 2 * GiB, 400).reason
    assert autobatch.choose(_linear(1, 0), 100 * GiB, 10**6).batch_size == 1024
    # 20 images: at least the default or the whole set (20), not 20 / 8 = 2; 16, a multiple of 8
    assert autobatch.choose(_linear(10 * MiB, 0), 2 * GiB, 20).batch_size == 16
    assert autobatch.choose(_linear(10 * MiB, 0), 2 * GiB, 5).batch_size == 5  # below 8: not rounded


def test_a_probe_that_runs_out_of_memory_keeps_the_last_batch_that_fitted():
    def step(batch: int) -> int:
        if batch >= 8:
            raise MemoryError("CUDA out of memory")
        return 100 * MiB * batch

    choice = autobatch.choose(step, 2 * GiB, 10_000)
    assert choice.batch_size == 4 and list(choice.measured) == [2, 4] and "a batch of 8 did not fit" in choice.reason

    def nothing_fits(batch: int) -> int:
        raise MemoryError("CUDA out of memory")

    with pytest.raises(UsageError, match=r"^--batch-size auto: not even a batch of 2 fits the device's 2.0 GiB free"):
        autobatch.choose(nothing_fits, 2 * GiB, 10_000)


def test_the_warm_up_ramps_to_the_scaled_rate_over_the_first_epoch():
    assert [autobatch.warmup_factor(seen, 32, 100) for seen in (0, 32, 64, 96)] == [0.32, 0.64, 0.96, 1.0]
    assert autobatch.optimizer_slots("adamw", 0.9) == 2 and autobatch.optimizer_slots("sgd", 0.9) == 1
    assert autobatch.optimizer_slots("sgd", 0.0) == 0


def test_auto_is_taken_by_the_option_a_config_file_and_compare_and_anything_else_is_refused(tmp_path):
    setting = SETTINGS_BY_NAME["batch_size"]
    assert setting.check("auto") == setting.check(" Auto ") == "auto" and setting.check("64") == 64
    with pytest.raises(UsageError, match=r"^--batch-size must be a whole number or auto, got 'big'$"):
        setting.check("big")
    with pytest.raises(UsageError, match=r"^--batch-size must be at least 1, got 0$"):
        setting.check(0)
    (tmp_path / "run.yaml").write_text("strategy: fine-tune\nbatch_size: auto\n")
    cfg, _ = TrainConfig.load_given(tmp_path / "run.yaml")
    assert cfg.batch_size == "auto"
    bad = run_tlzoo("train", "--batch-size", "huge", "--strategy", "fine-tune")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("--batch-size must be a whole number or "
                                                                               "auto, got 'huge'")  # fmt: skip
    assert "Traceback" not in bad.stderr
    from tlzoo.comparison import _check_params, parse_strategies

    [(name, params)] = parse_strategies("fine-tune:batch_size=auto")
    _check_params(name, params)  # what compare checks before any training
    with pytest.raises(UsageError, match=r"^--batch-size must be a whole number or auto, got 'max'$"):
        _check_params("fine-tune", {"batch_size": "max"})


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny") / "data", per_class=10)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))


def _config(data, tmp_path, **kw):  # type: ignore[no-untyped-def]
    base = dict(data=str(data), backbone="torch/resnet18", image_size=32, weights="none", epochs=1, out_dir=str(tmp_path / "runs"),
                patience=0, strategy="fine-tune", freeze="0", augment="none", lr=0.01)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_on_the_cpu_auto_trains_exactly_as_a_batch_of_32(tiny_data, tmp_path):
    lines = []

    class Lines(Reporter):
        def info(self, message: str) -> None:
            lines.append(message)

    fixed = train(_config(tiny_data, tmp_path, batch_size=32, name="fixed"))
    auto = train(_config(tiny_data, tmp_path, batch_size="auto", name="auto"), Lines())
    assert auto.metrics["batch_size"] == fixed.metrics["batch_size"] == 32
    assert auto.metrics["batch_size_auto"]["reason"] == "on the CPU there is no device memory to size it by: the default kept"
    assert "--batch-size auto: 32 (on the CPU there is no device memory to size it by: the default kept)" in lines
    assert [r["loss"] for r in auto.history] == pytest.approx([r["loss"] for r in fixed.history], abs=1e-5)
    assert "batch_size: auto" in (auto.run_dir / "config.yaml").read_text()  # a rerun chooses again


class _Probed:
    """A GPU's memory, injected into the torch engine: 1 GiB free, 30 MiB an image over 20 MiB."""

    def __init__(self, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        from tlzoo_torch import train as torch_train

        self.trainable_at_probe: list[int] = []
        self.lr_factors: list[float] = []
        self.configured: list[float] = []
        engine = torch_train.TorchEngine
        monkeypatch.setattr(autobatch, "MAX_BATCH", 3)  # 8 steps an epoch of the 24 images: a ramp to see

        def step_memory(engine_self, batch: int) -> int:  # type: ignore[no-untyped-def]
            self.trainable_at_probe.append(engine_self.trainable_params())
            return 20 * MiB + 30 * MiB * batch

        set_lr, configure = engine.set_lr_factor, engine.configure

        def record_lr(engine_self, factor: float) -> None:  # type: ignore[no-untyped-def]
            self.lr_factors.append(round(factor, 6))
            set_lr(engine_self, factor)

        def record_configure(engine_self, **kw) -> None:  # type: ignore[no-untyped-def]
            self.configured.append(kw["lr"])
            configure(engine_self, **kw)

        monkeypatch.setattr(engine, "free_memory", lambda engine_self: GiB)
        monkeypatch.setattr(engine, "step_memory", step_memory)
        monkeypatch.setattr(engine, "set_lr_factor", record_lr)
        monkeypatch.setattr(engine, "configure", record_configure)


def test_auto_measures_the_hungriest_stage_scales_the_rate_and_warms_up_each_stage(tiny_data, tmp_path, monkeypatch):
    probed = _Probed(monkeypatch)
    result = train(_config(tiny_data, tmp_path, strategy="two-stage", freeze=None, stage1_epochs=2, epochs=2,
                           batch_size="auto", schedule="none"))  # fmt: skip
    record = result.metrics["batch_size_auto"]
    # the cap of 3 holds the batch; the step was measured with stage 2's units trainable (all of them).
    assert result.metrics["batch_size"] == record["batch_size"] == 3 and record["cap"] == 3
    assert "in stage2" in record["reason"] and "capped at 3" in record["reason"]
    trainable = probed.trainable_at_probe[0]
    assert set(probed.trainable_at_probe) == {trainable} and trainable == result.metrics["trainable_params"]
    assert record["step_bytes"]["2"] == 80 * MiB + trainable * 4 * 2  # AdamW's two moments added
    assert probed.configured == [0.01 * 3 / 32, 0.01 * 3 / 32]  # both stages at the scaled rate
    ramp = [round(min(1.0, (seen + 3) / 24), 6) for seen in range(0, 24, 3)] + [1.0]
    # Each stage: its first epoch ramps step by step, its second runs at the full (scaled) rate.
    assert probed.lr_factors == [1.0, *ramp, 1.0] * 2
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["batch_size_auto"]["lr_scale"] == round(3 / 32, 4)


def test_a_resumed_auto_run_keeps_the_batch_it_started_with(tiny_data, tmp_path, monkeypatch):
    probed = _Probed(monkeypatch)

    class InterruptAfterOne(Reporter):
        def epoch(self, row) -> None:  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(_config(tiny_data, tmp_path, epochs=2, batch_size="auto", name="cut"), InterruptAfterOne())
    monkeypatch.setattr("tlzoo_torch.train.TorchEngine.free_memory", lambda engine_self: 64 * MiB)  # would choose 1
    probes = len(probed.trainable_at_probe)
    resumed = train(TrainConfig(), resume=tmp_path / "runs" / "cut")
    assert resumed.metrics["batch_size"] == 3 and len(probed.trainable_at_probe) == probes  # not measured again
    assert resumed.metrics["batch_size_auto"]["reason"] == "the batch the run started with"


def test_feature_extract_takes_auto_as_32_and_says_so(tiny_data, tmp_path):
    lines = []

    class Lines(Reporter):
        def info(self, message: str) -> None:
            lines.append(message)

    result = train(_config(tiny_data, tmp_path, strategy="feature-extract", freeze=None, augment="auto",
                           batch_size="auto"), Lines())  # fmt: skip
    assert result.metrics["accuracy"] >= 0
    assert any(line.startswith("--batch-size auto: 32 (feature-extract computes its features in batches of 32") for line in lines)


def test_feature_extract_batch_is_the_one_given_else_larger_on_a_cuda_device():
    assert autobatch.feature_batch(32, given=False, cuda=False) == (32, None)
    assert autobatch.feature_batch(16, given=True, cuda=True) == (16, None)  # a number given is kept
    assert autobatch.feature_batch(32, given=False, cuda=True) == (
        256, "features computed in batches of 256 on the CUDA device (--batch-size N sets the batch)")
    assert autobatch.feature_batch("auto", given=True, cuda=True)[0] == 256


def test_feature_extract_on_a_cuda_device_extracts_in_large_batches_and_trains_the_head_at_its_own(tiny_data, tmp_path,
                                                                                                     monkeypatch):
    from tlzoo.images import batches, decoders

    asked: list[int] = []
    real = batches.decode_batches
    monkeypatch.setattr(batches, "decode_batches", lambda *a, **kw: (asked.append(kw["batch_size"]), real(*a, **kw))[1])
    common = dict(strategy="feature-extract", freeze=None, augment="auto", head="mlp", epochs=2, seed=1)
    cpu = train(_config(tiny_data, tmp_path, name="cpu", **common))
    on_cpu, asked[:] = list(asked), []
    monkeypatch.setattr(decoders, "may_be_cuda", lambda device: True)  # a CUDA driver, as on a GPU machine
    cuda = train(_config(tiny_data, tmp_path, name="cuda", cache=False, **common))
    assert set(on_cpu) == {32} and set(asked) == {256}
    assert cpu.metrics["feature_batch"] == 32 and cuda.metrics["feature_batch"] == 256
    # the MLP head trained at batch 32 both times: the same history, from the same features
    assert [round(r["val_loss"], 5) for r in cpu.history] == [round(r["val_loss"], 5) for r in cuda.history]


def test_on_a_gpu_a_batch_nobody_gave_is_sized_to_the_device_and_a_given_one_wins(tiny_data, tmp_path, monkeypatch):
    from tlzoo_torch import train as torch_train

    _Probed(monkeypatch)
    monkeypatch.setattr(torch_train.TorchEngine, "device", property(lambda self: "cuda:0"))  # a GPU, for the choice
    lines: list[str] = []

    class Lines(Reporter):
        def info(self, message: str) -> None:
            lines.append(message)

    implicit = train(_config(tiny_data, tmp_path, name="implicit"), Lines())
    assert implicit.metrics["batch_size"] == implicit.metrics["batch_size_auto"]["batch_size"] == 3
    [said] = [line for line in lines if line.startswith("--batch-size auto: 3")]
    assert said.endswith("(the default on a GPU; --batch-size N fixes the batch)") and "x 3/32" in said
    given = train(_config(tiny_data, tmp_path, name="given", batch_size=32), given={"batch_size"})
    assert given.metrics["batch_size"] == 32 and "batch_size_auto" not in given.metrics
    other = train(_config(tiny_data, tmp_path, name="other", batch_size=8))
    assert other.metrics["batch_size"] == 8 and "batch_size_auto" not in other.metrics
