"""What a user sees: whole records when piped, small data with default options, predict/evaluate from a run
directory, the model card, and the Python API."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

import tlzoo

from .conftest import run_tlzoo
from .datagen import write_folder

BACKBONES = {"torch": "torch/resnet18", "keras": "keras/mobilenet_v2"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Fewer images (15) than the default batch size (32): refused before, trained in one partial batch now."""
    return write_folder(tmp_path_factory.mktemp("small") / "data", per_class=5)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("strategy", ["feature-extract", "fine-tune"])
def test_small_data_trains_with_default_options(small, tmp_path, framework, strategy):
    result = run_tlzoo("train", "--backbone", BACKBONES[framework], "--strategy", strategy, "--data", str(small),
                       "--weights", "none", "--image-size", "32", "--epochs", "1", "--out-dir", str(tmp_path / "runs"),
                       "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "oneDNN" not in result.stderr and "cuInit" not in result.stderr, "framework start-up noise is hidden"
    summary = json.loads(result.stdout)
    metrics = json.loads((tmp_path / "runs" / summary["run_dir"].rsplit("/", 1)[1] / "metrics.json").read_text())
    assert metrics["n"] == 3 and set(metrics["per_class"]) == {"blue", "green", "red"}


def test_piped_training_output_is_whole_records(small, tmp_path):
    result = run_tlzoo("train", "--backbone", "resnet18", "--freeze", "4", "--data", str(small), "--weights", "none",
                       "--image-size", "32", "--epochs", "2", "--out-dir", str(tmp_path / "runs"), "--name", "piped",
                       env={"COLUMNS": "60"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "--freeze 4 selects --strategy fine-tune" in lines
    assert "fine-tune: units 1-4 of 20 frozen (conv1 ... layer1.1.conv1), 11,057,539 trainable parameters, 2 epochs" in lines
    epochs = [line for line in lines if line.lstrip().startswith("epoch ")]
    assert len(epochs) == 2 and all("val_loss" in line and line.endswith("img/s") for line in epochs), epochs
    summary = [line for line in lines if line.startswith("torch/resnet18 fine-tune, 4/20 units frozen: val accuracy")]
    assert len(summary) == 1 and "log loss" in summary[0] and "macro F1" in summary[0]
    assert "" not in lines[1:], "no blank lines left by progress bars"
    assert not any("loading training images" in line or "epoch 1/2" in line for line in lines), "no progress bars in a pipe"
    assert any(line.startswith("kept the best epoch: ") for line in lines)
    assert any(line.startswith("augmentation: flip, crop (auto") for line in lines)


def test_predict_and_evaluate_from_a_run_directory_and_the_model_card(small, tmp_path):
    trained = run_tlzoo("train", "--backbone", "resnet18", "--data", str(small), "--weights", "none", "--image-size",
                        "32", "--out-dir", str(tmp_path / "runs"), "--name", "r", "--json")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    run = tmp_path / "runs" / "r"
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not a png")
    for i, src in enumerate(sorted((small / "red").iterdir())[:3]):
        (tmp_path / "mixed" / f"{i}.png").write_bytes(src.read_bytes())
    out = tmp_path / "predictions.csv"
    predicted = run_tlzoo("predict", str(run), str(tmp_path / "mixed"), "--top-k", "2", "--batch-size", "2",
                          "--out", str(out), env={"COLUMNS": "40"})  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert "skipped unreadable image" in predicted.stderr and "broken.png" in predicted.stderr
    lines = predicted.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith(str(tmp_path / "mixed")) for line in lines)
    rows = list(csv.DictReader(out.open()))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["0.png", "1.png", "2.png"]
    assert predicted.stderr.strip().endswith(f"3 image(s) classified with {run} on torch (cpu); 1 unreadable image(s) "
                                             f"skipped; written to {out}")  # fmt: skip
    on_cpu = run_tlzoo("predict", str(run), str(tmp_path / "mixed"), "--top-k", "2", "--device", "cpu", "--json")
    assert on_cpu.returncode == 0, on_cpu.stderr[-2000:]
    assert json.loads(on_cpu.stdout)["provider"] == "torch (cpu)"
    assert [r["path"] for r in json.loads(on_cpu.stdout)["predictions"]] == [r["path"] for r in rows]
    assert set(rows[0]) == {"path", "label1", "probability1", "label2", "probability2"}
    scored = run_tlzoo("evaluate", str(run), "--data", str(small), "--json", "--batch-size", "4")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout)["n"] == 15
    broken = tmp_path / "broken-data"
    shutil.copytree(small, broken)
    (broken / "red" / "zz.png").write_bytes(b"not a png")
    table = tmp_path / "per-class.csv"
    scored = run_tlzoo("evaluate", str(run), "--data", str(broken), "--batch-size", "4", "--out", str(table))
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "skipped unreadable image" in scored.stderr and "zz.png" in scored.stderr
    per_class = list(csv.DictReader(table.open()))
    assert [r["class"] for r in per_class] == ["blue", "green", "red"] and sum(int(r["support"]) for r in per_class) == 15

    card = (run / "MODEL_CARD.md").read_text()
    assert card.startswith("# torch/resnet18 feature-extract on data")
    assert "| blue | 4 | 1 |" in card and "Evaluated on only 3 images" in card and "random initialisation" in card
    exported = run_tlzoo("export", "onnx", str(run), "--json")
    assert exported.returncode == 0, exported.stderr[-2000:]
    card = (run / "MODEL_CARD.md").read_text()
    assert "- `model.onnx` (fp32, opset" in card and "check **passed**" in card and "None yet" not in card


def test_python_api_train_evaluate_predict_compare(small, tmp_path):
    import tlzoo.comparison  # noqa: F401  (a submodule import must not shadow tlzoo.compare the function)

    assert callable(tlzoo.compare) and callable(tlzoo.evaluate) and callable(tlzoo.predict)
    result = tlzoo.train(backbone="torch/resnet18", data=str(small), weights="none", image_size=32,
                         out_dir=str(tmp_path / "runs"), name="api", verbose=False)  # fmt: skip
    metrics = tlzoo.evaluate(result.run_dir, small)
    assert metrics["n"] == 15 and 0 <= metrics["accuracy"] <= 1
    images = sorted((small / "green").iterdir())[:2]
    by_path = tlzoo.predict(result.run_dir, [str(p) for p in images], top_k=1)
    run = tlzoo.load_run(result.run_dir)
    by_array = run.predict([np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(p)) for p in images], top_k=1)
    assert [p.top[0][0] for p in by_path] == [p.top[0][0] for p in by_array]
    assert by_path[0].top[0][1] == pytest.approx(by_array[0].top[0][1], abs=1e-6)
    with pytest.raises(tlzoo.TlzooError, match="--freeze does not fit --strategy feature-extract"):
        tlzoo.train(backbone="torch/resnet18", strategy="feature-extract", freeze="4", data=str(small), verbose=False)

    board = tlzoo.compare(small, "resnet18", "feature-extract", out=tmp_path / "cmp", image_size=32, weights="none",
                          onnx=False, verbose=False)  # fmt: skip
    assert [(r["backbone"], r["strategy"], r["status"]) for r in board] == [("torch/resnet18", "feature-extract", "ok")]


def test_piped_compare_leaderboard_is_one_record_per_line(small, tmp_path):
    result = run_tlzoo("compare", "--data", str(small), "--backbones", "resnet18", "--strategies",
                       "feature-extract,fine-tune:freeze=4", "--epochs", "1", "--image-size", "32", "--weights",
                       "none", "--test-split", "0.2", "--no-onnx", "--out", str(tmp_path / "cmp"),
                       env={"COLUMNS": "80"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "[1/2] torch/resnet18 feature-extract: training ..."
    assert "[2/2] torch/resnet18 fine-tune:freeze=4: training ..." in lines
    records = [line for line in lines if line.startswith(("1. ", "2. "))]
    assert len(records) == 2 and all("test acc" in r and "train s" in r for r in records), lines
    best = [line for line in lines if line.startswith("best: ")]
    assert len(best) == 1 and best[0].endswith(("feature-extract", "fine-tune-freeze4")), best
    assert "…" not in result.stdout


def test_tensorboard_logs_every_epoch(small, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_tlzoo("train", "--backbone", "resnet18", "--freeze", "all", "--data", str(small), "--weights", "none",
                       "--image-size", "32", "--epochs", "3", "--patience", "0", "--tensorboard",
                       "--out-dir", str(tmp_path / "runs"), "--name", "tb")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    events = EventAccumulator(str(tmp_path / "runs" / "tb" / "tensorboard"))
    events.Reload()
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val"} <= set(events.Tags()["scalars"])
    history = list(csv.DictReader((tmp_path / "runs" / "tb" / "history.csv").open()))
    logged = events.Scalars("loss/val")
    assert [e.step for e in logged] == [1, 2, 3]
    # TensorBoard stores float32: compare at float32's precision, not by rounding (1.153545 rounds either way).
    assert [e.value for e in logged] == pytest.approx([float(r["val_loss"]) for r in history], rel=1e-6)


def test_version():
    result = run_tlzoo("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"tlzoo {tlzoo.__version__}"


@pytest.mark.parametrize("framework, missing", [
    ("torch", "--device cuda:3: torch sees no CUDA GPU on this machine; use --device cpu (or auto)"),
    ("keras", "--device cuda:3: TensorFlow sees 0 GPU(s) on this machine; use --device cpu (or auto)")])  # fmt: skip
def test_where_a_run_directory_is_predicted_is_each_frameworks_device(framework, missing):
    from tlzoo.adapters import FrameworkAdapter, adapter_for
    from tlzoo.errors import UsageError

    adapter = adapter_for(framework)
    assert adapter.inference_device("cpu") == "cpu"
    with pytest.raises(UsageError) as raised:
        adapter.inference_device("cuda:3")
    assert str(raised.value) == missing

    # the default a third-party adapter gets when it says nothing about devices
    assert FrameworkAdapter.inference_device(adapter, "auto") == "cpu"
    with pytest.raises(UsageError, match=rf"^--device cuda: {type(adapter).__name__} runs trained classifiers on the CPU only"):
        FrameworkAdapter.inference_device(adapter, "cuda")


def test_keras_refuses_a_device_it_can_no_longer_change_to(monkeypatch):
    import tensorflow as tf

    from tlzoo.errors import UsageError
    from tlzoo_keras.train import select_device

    gpu, other = object(), object()

    def started(devices, kind):  # type: ignore[no-untyped-def]
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "set_visible_devices", started)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [gpu, other])
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind: [gpu])  # started on the first GPU
    assert select_device("0") == "gpu"  # already where it was asked to be
    with pytest.raises(UsageError, match=r"^--device cpu: TensorFlow already runs on 1 GPU\(s\) in this process and "
                                         r"cannot change them now; choose the device in a new process$"):
        select_device("cpu")
    with pytest.raises(UsageError, match=r"^--device cuda:1: TensorFlow already runs on 1 GPU"):
        select_device("cuda:1")
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind: [])  # a CPU-only TensorFlow, started
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [])
    assert select_device("cpu") == "cpu"
