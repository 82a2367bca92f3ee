"""Every strategy on a torch and a Keras backbone, the feature cache, frozen weights, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlzoo.errors import FreezeSpecError, UsageError
from tlzoo.training.config import TrainConfig
from tlzoo.training.reporter import Reporter
from tlzoo.training.run import TrainingInterrupted, train

from .conftest import run_tlzoo
from .datagen import write_folder

RUN_FILES = {"config.yaml", "labels.json", "split.csv", "environment.json", "metrics.json", "history.csv",
             "classifier.json", "report.json", "learning_curves.png", "confusion_matrix.png"}  # fmt: skip
BACKBONES = {"torch": ("torch/resnet18", "model.pt"), "keras": ("keras/mobilenet_v2", "model.keras")}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny") / "data", per_class=10)


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))


def config(data, tmp_path, **kw):
    base = dict(data=str(data), image_size=32, weights="none", epochs=1, batch_size=8, out_dir=str(tmp_path / "runs"),
                patience=0)  # fmt: skip
    if kw.get("strategy") == "two-stage":
        base["stage1_epochs"] = 1
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("strategy", ["feature-extract", "fine-tune", "two-stage", "scratch"])
def test_every_strategy_writes_a_complete_run(tiny_data, tmp_path, framework, strategy):
    backbone, model_file = BACKBONES[framework]
    result = train(config(tiny_data, tmp_path, backbone=backbone, strategy=strategy))
    files = {p.name for p in result.run_dir.iterdir()}
    assert RUN_FILES | {model_file} <= files
    assert not any(name.startswith(("last_state", ".")) for name in files), files
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n"] == 6 and metrics["split"] == "val" and 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class"]) == {"blue", "green", "red"}
    assert np.asarray(metrics["confusion_matrix"]).sum() == 6
    meta = json.loads((result.run_dir / "classifier.json").read_text())
    assert meta["backbone"] == backbone and meta["classes"] == ["blue", "green", "red"]
    if strategy == "two-stage":
        assert [row["stage"] for row in result.history] == ["stage1", "stage2"]
    split = (result.run_dir / "split.csv").read_text().splitlines()
    assert split[0] == "path,label,subset,bytes,sha256,path_bytes" and len(split) == 31


@pytest.mark.parametrize("head", ["softmax", "logreg-ovr", "linear-svm", "mlp"])
def test_heads_learn_the_tiny_data(tiny_data, tmp_path, head):
    extra = {"hidden": [16]} if head == "mlp" else {}
    result = train(config(tiny_data, tmp_path, backbone="torch/resnet18", head=head, epochs=30, **extra))
    assert result.metrics["accuracy"] == 1.0, result.metrics
    # The head in the saved model gives the same probabilities as the metrics were computed with.
    from tlzoo.runs.trained import load_run

    run = load_run(result.run_dir)
    assert run.predict_proba(result_images(result)).shape == (6, 3)


def result_images(result):
    import csv

    from tlzoo.images.decode import load_image
    from tlzoo.runs.trained import load_run

    prep = load_run(result.run_dir).preprocessing  # the run's own resize policy
    rows = list(csv.DictReader(open(result.run_dir / "split.csv")))
    return np.stack([load_image(r["path"], (32, 32), prep) for r in rows if r["subset"] == "val"])


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_second_identical_run_hits_the_feature_cache(tiny_data, tmp_path, framework):
    backbone, _ = BACKBONES[framework]
    first = train(config(tiny_data, tmp_path, backbone=backbone))
    second = train(config(tiny_data, tmp_path, backbone=backbone))
    assert first.metrics["feature_cache"] == "miss" and second.metrics["feature_cache"] == "hit"
    assert second.metrics["accuracy"] == first.metrics["accuracy"]
    assert second.metrics["log_loss"] == pytest.approx(first.metrics["log_loss"], abs=1e-9)
    tapped = train(config(tiny_data, tmp_path, backbone=backbone, tap="3"))
    assert tapped.metrics["feature_cache"] == "miss", "a different tap is a different cache entry"


def test_threads_sets_the_frameworks_thread_count(tiny_data, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        train(config(tiny_data, tmp_path, backbone="torch/resnet18", threads=1, name="one-thread"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UsageError, match=r"^--threads must be at least 1, got 0$"):
        train(config(tiny_data, tmp_path, backbone="torch/resnet18", threads=0))


def test_keras_threads_in_a_new_process(tiny_data, tmp_path):
    done = run_tlzoo("train", "--backbone", "keras/mobilenet_v2", "--data", str(tiny_data), "--image-size", "32",
                     "--weights", "none", "--threads", "1", "--out-dir", str(tmp_path / "runs"), "--name", "k")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "runs" / "k" / "config.yaml").read_text().split("threads: ")[1].split()[0]) == 1


def test_torch_vgg16_freeze_8_frozen_bits_unchanged_unfrozen_changed(tiny_data, tmp_path):
    import torch
    import torchvision

    from tlzoo.registry import get_registry
    from tlzoo.runs.trained import load_run

    start = torchvision.models.vgg16().state_dict()  # the "pretrained" weights, as a user's own file
    torch.save(start, tmp_path / "start.pth")
    result = train(config(tiny_data, tmp_path, backbone="torch/vgg16", strategy="fine-tune", freeze="8", epochs=2,
                          lr=0.01, weights=str(tmp_path / "start.pth")))  # fmt: skip
    trained = {k.removeprefix("features.model."): v for k, v in load_run(result.run_dir).model.state_dict().items()}
    units = get_registry().resolve("torch/vgg16").units
    assert len(units) == 13
    for i, unit in enumerate(units):
        for suffix in ("weight", "bias"):
            key = f"{unit.name}.{suffix}"
            if i < 8:
                assert torch.equal(start[key], trained[key]), f"frozen unit {i + 1} {key} changed"
            else:
                assert not torch.equal(start[key], trained[key]), f"unfrozen unit {i + 1} {key} did not train"
    assert result.metrics["frozen_units"] == 8


def test_keras_vgg16_freeze_8_frozen_bits_unchanged_unfrozen_changed(tiny_data, tmp_path):
    import keras

    from tlzoo.runs.trained import load_run

    start = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    start.save_weights(tmp_path / "start.weights.h5")
    before = {layer.name: layer.get_weights() for layer in start.layers if layer.weights}
    result = train(config(tiny_data, tmp_path, backbone="keras/vgg16", strategy="fine-tune", freeze="8", epochs=2,
                          lr=0.01, weights=str(tmp_path / "start.weights.h5")))  # fmt: skip
    model = load_run(result.run_dir).model
    assert len(before) == 13
    for i, (name, weights) in enumerate(before.items()):
        after = model.get_layer(name).get_weights()
        same = all(np.array_equal(a, b) for a, b in zip(weights, after))
        if i < 8:
            assert same, f"frozen unit {i + 1} {name} changed"
        else:
            assert not same, f"unfrozen unit {i + 1} {name} did not train"


class InterruptAfter(Reporter):
    def __init__(self, epochs: int) -> None:
        self.left = epochs

    def epoch(self, row):
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_resume_after_interrupt_continues_from_the_saved_epoch(tiny_data, tmp_path, framework):
    backbone, model_file = BACKBONES[framework]
    cfg = config(tiny_data, tmp_path, backbone=backbone, strategy="two-stage", stage1_epochs=2, epochs=2, name="r")
    with pytest.raises(TrainingInterrupted, match=r"continue with: tlzoo train --resume .*runs/r"):
        train(cfg, InterruptAfter(3))
    run_dir = tmp_path / "runs" / "r"
    assert (run_dir / model_file).is_file(), "the best checkpoint so far is kept"
    assert not (run_dir / "metrics.json").exists()
    seen = []

    class Record(Reporter):
        def epoch(self, row):
            seen.append(row["epoch"])

    result = train(TrainConfig(), Record(), resume=run_dir)
    assert seen == [4], "only the epoch after the interrupted one runs"
    assert [(r["epoch"], r["stage"]) for r in result.history] == [(1, "stage1"), (2, "stage1"), (3, "stage2"), (4, "stage2")]
    assert (run_dir / "metrics.json").is_file()
    with pytest.raises(UsageError, match="has finished training; --resume continues interrupted runs only"):
        train(TrainConfig(), resume=run_dir)


def test_bad_settings_fail_before_training(tiny_data, tmp_path):
    with pytest.raises(FreezeSpecError, match="--freeze 99 is out of range: this backbone has 20 units"):
        train(config(tiny_data, tmp_path, backbone="torch/resnet18", strategy="fine-tune", freeze="99"))
    with pytest.raises(UsageError, match="--strategy 'finetune' is not known. Did you mean 'fine-tune'"):
        train(config(tiny_data, tmp_path, strategy="finetune"))
    with pytest.raises(UsageError, match="--head 'svm' is not known"):
        train(config(tiny_data, tmp_path, head="svm"))
    with pytest.raises(UsageError, match="--augment flip does not fit --strategy feature-extract"):
        train(config(tiny_data, tmp_path, augment="flip"))
    with pytest.raises(UsageError, match="image size 16x16 is below torch/resnet18's minimum of 32x32"):
        train(config(tiny_data, tmp_path, backbone="torch/resnet18", image_size=16))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_train_json_config_rerun_and_evaluate(tiny_data, tmp_path):
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    args = ["train", "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(tiny_data),
            "--batch-size", "8", "--out-dir", str(tmp_path / "runs"), "--json"]  # fmt: skip
    first = run_tlzoo(*args, env=env)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["feature_cache"] == "miss" and summary["run_dir"].endswith("resnet18-feature-extract")
    rerun = run_tlzoo("train", "--config", summary["run_dir"] + "/config.yaml", "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(rerun.stdout)
    assert again["feature_cache"] == "hit" and again["run_dir"].endswith("resnet18-feature-extract-2")
    assert again["accuracy"] == summary["accuracy"]
    scored = run_tlzoo("evaluate", summary["run_dir"], "--data", str(tiny_data), "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["n"] == 30


def test_cli_bad_input_exits_cleanly(tmp_path):
    result = run_tlzoo("train", "--data", str(tmp_path / "missing"), "--weights", "none", "--out-dir", str(tmp_path / "runs"))
    assert result.returncode == 1
    assert f"data path {tmp_path / 'missing'} does not exist" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_two_stage_keeps_normalization_in_inference_mode_in_stage_two(tiny_data, tmp_path):
    import torch
    import torchvision

    from tlzoo.runs.trained import load_run

    start = torchvision.models.resnet18().state_dict()
    torch.save(start, tmp_path / "start.pth")
    result = train(config(tiny_data, tmp_path, backbone="torch/resnet18", strategy="two-stage", stage1_epochs=1,
                          epochs=1, lr=0.01, weights=str(tmp_path / "start.pth")))  # fmt: skip
    trained = {k.removeprefix("features.model."): v for k, v in load_run(result.run_dir).model.state_dict().items()}
    norms = [k for k in start if k.startswith(("bn", "layer")) and ".bn" in k or k.startswith("bn1")]
    assert norms
    for key in norms:
        assert torch.equal(start[key], trained[key]), f"{key} moved in stage 2"
    # Stage 2 trains every convolution and the head, but no normalization parameter.
    norm_params = sum(v.numel() for k, v in start.items() if ("bn" in k or "downsample.1" in k) and k.endswith(("weight", "bias")))
    conv_params = sum(v.numel() for k, v in start.items() if k.endswith("weight") and v.ndim == 4)
    head_params = 512 * 3 + 3
    assert result.metrics["trainable_params"] == conv_params + head_params
    assert norm_params > 0 and [r["stage"] for r in result.history] == ["stage1", "stage2"]


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_resumed_run_has_the_history_of_an_uninterrupted_one(tiny_data, tmp_path, framework):
    """Random state (augmentation, dropout, data order) continues as if the run had never stopped."""
    backbone, _ = BACKBONES[framework]
    settings = dict(backbone=backbone, strategy="fine-tune", epochs=3, augment="flip,crop", dropout=0.3, lr=0.01)
    whole = train(config(tiny_data, tmp_path, name="whole", **settings))
    with pytest.raises(TrainingInterrupted):
        train(config(tiny_data, tmp_path, name="cut", **settings), InterruptAfter(2))
    resumed = train(TrainConfig(), resume=tmp_path / "runs" / "cut")
    assert len(resumed.history) == len(whole.history) == 3
    for a, b in zip(whole.history, resumed.history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), (key, a, b)
    assert resumed.metrics["accuracy"] == whole.metrics["accuracy"]


def test_ctrl_c_in_the_first_epoch_says_nothing_was_saved_and_leaves_no_run(tiny_data, tmp_path):
    from contextlib import contextmanager

    class InterruptMidEpoch(Reporter):
        @contextmanager
        def task(self, description, total):
            def advance(n):
                if description.startswith("fine-tune epoch"):
                    raise KeyboardInterrupt

            yield advance

    with pytest.raises(TrainingInterrupted, match="before any epoch finished: nothing was saved"):
        train(config(tiny_data, tmp_path, backbone="torch/resnet18", strategy="fine-tune", name="early"),
              InterruptMidEpoch())  # fmt: skip
    assert not (tmp_path / "runs" / "early").exists()


def _overlapping_classes(seed: int, n: int = 200, dim: int = 40, classes: int = 4):  # type: ignore[no-untyped-def]
    centres = np.random.default_rng(0).normal(size=(classes, dim))
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return (centres[y] + 3.0 * rng.normal(size=(n, dim))).astype(np.float32), y


@pytest.mark.parametrize("kind", ["softmax", "logreg-ovr", "linear-svm"])
def test_c_is_chosen_by_validation_log_loss_for_logistic_heads_and_by_accuracy_for_the_svm(kind):
    from tlzoo.heads import choose_c, head_scores

    (x, y), (xv, yv) = _overlapping_classes(0), _overlapping_classes(1)
    cs = (0.001, 0.01, 0.1, 1.0, 10.0)
    c, head, scores = choose_c(kind, x, y, xv, yv, 4, cs)
    assert [s[0] for s in scores] == list(cs)
    loss, accuracy = head_scores(head, xv, yv, 4)
    assert (c, accuracy, loss) in scores  # the head returned is the chosen C's, kept
    if kind == "linear-svm":
        assert accuracy == max(s[1] for s in scores)
    else:
        assert loss == min(s[2] for s in scores)
        # On this data the two rules disagree: the best accuracy is at stronger regularization.
        assert c == 0.1 and accuracy < max(s[1] for s in scores)


def test_the_chosen_c_does_not_move_with_a_feature_change_of_parts_per_million():
    from tlzoo.heads import choose_c

    (x, y), (xv, yv) = _overlapping_classes(1), _overlapping_classes(2)
    rng = np.random.default_rng(3)
    nudge = lambda a: (a * (1 + 3e-6 * rng.standard_normal(a.shape))).astype(np.float32)  # noqa: E731
    cs = (0.001, 0.01, 0.1, 1.0, 10.0)
    chosen = {choose_c("softmax", nudge(x), y, nudge(xv), yv, 4, cs)[0] for _ in range(5)}
    assert chosen == {choose_c("softmax", x, y, xv, yv, 4, cs)[0]}
