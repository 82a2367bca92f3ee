"""Feature-extract runs on published weights: head-only run directories, a cache found by the files alone,
a cached run that imports no framework, and decoding streamed a few batches ahead."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tlzoo.images.batches
import tlzoo.images.sets
from tlzoo import images as datamod
from tlzoo.errors import DataError, UsageError, WeightsError
from tlzoo.training.config import TrainConfig
from tlzoo.training.run import train

from .conftest import run_tlzoo
from .datagen import write_folder

KERAS_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@pytest.fixture()
def data(tmp_path):
    return write_folder(tmp_path / "data", per_class=8)


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def keras_weights(tmp_path, monkeypatch) -> Path:
    """A Keras MobileNetV2 weights file under its published name (Keras publishes no hash for it), in a
    KERAS_HOME of this test's own: the framework's cache then holds 'imagenet' weights."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path / "keras" / "models" / KERAS_WEIGHTS
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def config(data: Path, tmp_path: Path, backbone: str, **kw) -> TrainConfig:
    return TrainConfig(**{"data": str(data), "backbone": backbone, "image_size": 32, "batch_size": 8, "c": 1.0,
                          "out_dir": str(tmp_path / "runs"), **kw})  # fmt: skip


def val_images(run_dir: Path) -> tuple[np.ndarray, list[str]]:
    import csv

    from tlzoo.images.decode import load_image
    from tlzoo.runs.trained import load_run

    prep = load_run(run_dir).preprocessing  # the run's own resize policy
    rows = [r for r in csv.DictReader(open(run_dir / "split.csv")) if r["subset"] == "val"]
    return np.stack([load_image(r["path"], (32, 32), prep) for r in rows]), [r["path"] for r in rows]


CACHED_RUN = """
import json, sys
from tlzoo.training.config import TrainConfig
from tlzoo.training.run import train
result = train(TrainConfig(**json.loads(sys.argv[1])))
print(json.dumps({"metrics": result.metrics, "run_dir": str(result.run_dir),
                  "imported": sorted(m for m in ("torch", "torchvision", "tensorflow", "keras") if m in sys.modules)}))
"""


def cached_run_in_a_new_process(cfg: TrainConfig) -> dict:
    done = subprocess.run([sys.executable, "-c", CACHED_RUN, json.dumps(cfg.to_dict())], capture_output=True,
                          text=True, env={**os.environ}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_head_only_run_and_a_cached_run_that_imports_no_framework(data, tmp_path, request, framework):
    from tlzoo.runs.trained import load_run
    from tlzoo.weights import file_digest

    weights = request.getfixturevalue("mobilenet_in_cache" if framework == "torch" else "keras_weights")
    cfg = config(data, tmp_path, f"{framework}/mobilenet_v2")
    first = train(cfg)
    files = {p.name for p in first.run_dir.iterdir()}
    assert "head.npz" in files and not {"model.pt", "model.keras"} & files, files
    meta = json.loads((first.run_dir / "classifier.json").read_text())
    assert meta["model_file"] == "head.npz" and meta["format_version"] == 3
    assert meta["weights_sha256"] == file_digest(weights, "sha256")
    assert first.metrics["feature_cache"] == "miss"

    # The run loads back from the weights it names: the same probabilities its metrics were computed with.
    images, _ = val_images(first.run_dir)
    run = load_run(first.run_dir)
    proba = run.predict_proba(images)
    from sklearn.metrics import log_loss

    labels = [run.classes.index(Path(p).parent.name) for p in val_images(first.run_dir)[1]]
    assert log_loss(labels, proba, labels=range(3)) == pytest.approx(first.metrics["log_loss"], abs=1e-5)

    second = cached_run_in_a_new_process(cfg)
    assert second["imported"] == [], f"a cached run imported {second['imported']}"
    assert second["metrics"]["feature_cache"] == "hit"
    for key in ("accuracy", "log_loss", "confusion_matrix", "n", "trainable_params", "units", "frozen_units"):
        assert second["metrics"][key] == first.metrics[key], key
    assert (Path(second["run_dir"]) / "head.npz").read_bytes() == (first.run_dir / "head.npz").read_bytes()


def _empty_but_engines(cache: Path) -> None:
    """A cold cache for the next run's images (no features, no decoded pixels), the engines' folder kept: the
    exports and auto's memory, as on a machine where earlier runs used this backbone."""
    shutil.rmtree(cache / "store", ignore_errors=True)
    for entry in (cache / "features").iterdir():
        if entry.name != "engines":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


SLOWED = {"torch": "tlzoo_torch.backend:TorchBackbone", "keras": "tlzoo_keras.backend:KerasBackbone"}


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_auto_remembers_its_choice_and_a_later_run_reopens_the_export_without_the_framework(
        tmp_path, request, monkeypatch, framework):  # fmt: skip
    from tlzoo.plugins import load_object
    from tlzoo.feature_engines import MIN_BATCHES

    request.getfixturevalue("mobilenet_in_cache" if framework == "torch" else "keras_weights")
    cache = tmp_path / "cache"
    data = write_folder(tmp_path / "data", per_class=MIN_BATCHES)  # batches enough for auto to measure
    cfg = config(data, tmp_path, f"{framework}/mobilenet_v2", batch_size=2)

    def run(**kw) -> dict:
        _empty_but_engines(cache)
        return train(TrainConfig(**{**cfg.to_dict(), **kw})).metrics

    train(TrainConfig(**{**cfg.to_dict(), "feature_engine": "onnxruntime"}))  # the export, prepared once
    [export] = (cache / "features" / "engines").glob("*.onnx")
    backbone = load_object(SLOWED[framework], "test")
    slowed = backbone._run  # the framework made slower than onnxruntime, so that auto keeps the export
    monkeypatch.setattr(backbone, "_run", lambda self, model, batch: (time.sleep(0.05), slowed(self, model, batch))[1])
    measured = run()
    monkeypatch.setattr(backbone, "_run", slowed)
    assert measured["feature_engine"] == "onnxruntime", measured["feature_engine_auto"]
    assert "remembered" not in measured["feature_engine_auto"]
    [(key, record)] = json.loads((cache / "features" / "engines" / "auto.json").read_text()).items()
    assert record["engine"] == "onnxruntime" and record["entry"]["file"] == export.name
    assert record["images_per_second"] == measured["feature_engine_auto"]["images_per_second"]

    # a later run, in a fresh process, on images not seen (emptied caches): the export is reopened from the
    # memory, the framework never imported, and the features are the same
    _empty_but_engines(cache)
    later = cached_run_in_a_new_process(cfg)
    assert later["imported"] == [], f"a run on a remembered engine imported {later['imported']}"
    reopened = later["metrics"]
    assert reopened["feature_cache"] == "miss" and reopened["feature_engine"] == "onnxruntime"
    assert reopened["feature_engine_auto"]["remembered"] == {"measured": record["measured"],
                                                             "images_per_second": record["images_per_second"]}
    assert reopened["feature_engine_auto"]["images_per_second"] == {}  # nothing measured on this run
    assert (reopened["accuracy"], reopened["confusion_matrix"]) == (measured["accuracy"], measured["confusion_matrix"])
    assert reopened["log_loss"] == pytest.approx(measured["log_loss"], abs=1e-5)  # onnxruntime sessions may sum in another order

    # an export changed since is not reopened: the backbone is built, exported again and measured again
    export.write_bytes(export.read_bytes()[:-10])
    from tlzoo.training.reporter import Reporter

    said: list[str] = []

    class Lines(Reporter):
        def info(self, message: str) -> None:
            said.append(message)

    _empty_but_engines(cache)
    changed = train(cfg, Lines()).metrics["feature_engine_auto"]
    assert (f"feature engine auto: the remembered onnxruntime does not reopen (the cached export {export.name} is "
            f"gone or changed); measuring again") in said, said
    assert "remembered" not in changed and set(changed["images_per_second"]) == {"framework", "onnxruntime"}

    # a malformed memory is ignored (auto measures) and written anew
    (cache / "features" / "engines" / "auto.json").write_text(json.dumps({key: {"engine": 7}}))
    again = run()["feature_engine_auto"]
    assert "remembered" not in again and set(again["images_per_second"]) == {"framework", "onnxruntime"}
    assert json.loads((cache / "features" / "engines" / "auto.json").read_text())[key]["engine"] == again["engine"]


def test_head_only_run_refuses_other_weights(data, tmp_path, mobilenet_in_cache):
    result = train(config(data, tmp_path, "torch/mobilenet_v2"))
    original = mobilenet_in_cache.read_bytes()
    try:
        mobilenet_in_cache.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        # The file no longer matches torchvision's published hash prefix either, so resolving it fails first;
        # a file that passes that check but is not the run's is refused by the run's own sha256.
        refused = run_tlzoo("evaluate", str(result.run_dir), "--data", str(data))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert str(mobilenet_in_cache) in refused.stderr
    finally:
        mobilenet_in_cache.write_bytes(original)
    meta_path = result.run_dir / "classifier.json"
    meta = json.loads(meta_path.read_text())
    meta["weights_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    from tlzoo.runs.trained import load_run

    with pytest.raises(WeightsError, match="keeps only its head: its backbone is torch/mobilenet_v2 with the weights file"):
        load_run(result.run_dir)
    meta.pop("weights_sha256")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="a head-only run \\(head.npz\\) needs its backbone's weights tag and weights_sha256"):
        load_run(result.run_dir)


def test_cache_is_found_by_the_files_and_follows_their_contents(data, tmp_path, mobilenet_in_cache):
    from PIL import Image

    cfg = config(data, tmp_path, "torch/mobilenet_v2")
    assert train(cfg).metrics["feature_cache"] == "miss"
    touched = data / "red" / "000.png"
    os.utime(touched, ns=(10**18, 10**18))  # same bytes, new time: the alias misses, the content key hits
    assert train(cfg).metrics["feature_cache"] == "hit"
    aliases = sorted((tmp_path / "cache" / "features" / "stats").iterdir())
    assert len(aliases) == 3, "one alias per split, and one more for the split holding the touched file"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(touched)  # new content
    assert train(cfg).metrics["feature_cache"] == "partial", "only the split holding the changed file misses"


def test_unreadable_images_are_remembered_by_the_cache(data, tmp_path, mobilenet_in_cache):
    broken = data / "green" / "zz-broken.png"
    broken.write_bytes(b"not a png")
    cfg = config(data, tmp_path, "torch/mobilenet_v2", val_split=0.25)
    first, second = train(cfg), train(cfg)
    assert second.metrics["feature_cache"] == "hit"
    for result in (first, second):
        report = json.loads((result.run_dir / "report.json").read_text())
        assert [s["path"] for s in report["skipped_images"]] == [str(broken)]
        split = (result.run_dir / "split.csv").read_text()
        assert "zz-broken" not in split and len(split.splitlines()) == 1 + 24
    assert second.metrics["accuracy"] == first.metrics["accuracy"]
    with pytest.raises(DataError, match="cannot read image .*zz-broken.png"):
        train(config(data, tmp_path, "torch/mobilenet_v2", val_split=0.25, strict=True))


def test_decoding_streams_a_few_batches_ahead(tmp_path, monkeypatch):
    data = write_folder(tmp_path / "many", per_class=40)
    files = datamod.labelled(datamod.scan(data))
    started = []
    real = datamod.load_image
    monkeypatch.setattr(tlzoo.images.batches, "load_image", lambda path, size, prep=None: (started.append(path), real(path, size, prep))[1])
    seen = 0
    for batch in datamod.decode_batches(files.paths, (16, 16), batch_size=10, threads=2):
        seen += len(batch.index)
        # Decoding runs ahead of the consumer by at most three batches, never the whole dataset.
        assert len(started) <= seen + 30, (len(started), seen)
        assert batch.images.shape == (len(batch.index), 16, 16, 3)
    assert seen == len(files) == 120 and started == files.paths


def test_decoding_reports_unreadable_files_in_their_batch(tmp_path):
    data = write_folder(tmp_path / "d", per_class=3)
    (data / "red" / "001.png").write_bytes(b"junk")
    files = datamod.labelled(datamod.scan(data))
    batches = list(datamod.decode_batches(files.paths, (8, 8), batch_size=4))
    assert [len(b.index) + len(b.skipped) for b in batches] == [4, 4, 1]
    kept = np.concatenate([b.index for b in batches]).tolist()
    bad = files.paths.index(str(data / "red" / "001.png"))
    assert kept == [i for i in range(9) if i != bad]
    assert [p for b in batches for p, _ in b.skipped] == [files.paths[bad]]
    with pytest.raises(DataError, match="cannot read image .*001.png"):
        list(datamod.decode_batches(files.paths, (8, 8), batch_size=4, strict=True))


def test_the_data_fingerprint_is_remembered_by_the_files_stats_and_follows_their_contents(data, tmp_path, monkeypatch):
    from tlzoo.training import cache

    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    files = datamod.labelled(datamod.scan(data))
    expected = datamod.fingerprint(files.paths, np.asarray(files.labels))
    assert cache.data_fingerprint(files) == expected  # computed: every file read
    reads = []
    real = datamod.fingerprint
    monkeypatch.setattr(tlzoo.images.sets, "fingerprint", lambda *a: reads.append(1) or real(*a))
    assert cache.data_fingerprint(files) == expected and reads == []  # remembered: no file read
    touched = data / "red" / "000.png"
    touched.write_bytes(touched.read_bytes() + b"\0")  # new content, new size and time
    changed = cache.data_fingerprint(datamod.labelled(datamod.scan(data)))
    assert changed != expected and reads == [1]
    run_dir = Path(train(config(data, tmp_path, "torch/resnet18", weights="none")).run_dir)
    recorded = json.loads((run_dir / "environment.json").read_text())["data"]["fingerprint_sha256"]
    assert recorded == real(*_train_files(run_dir))


def _train_files(run_dir: Path) -> tuple[list[str], np.ndarray]:
    """The run's training files and their class indices, from its split.csv."""
    import csv

    from tlzoo.runs.trained import load_run

    classes = load_run(run_dir).classes
    rows = [r for r in csv.DictReader(open(run_dir / "split.csv")) if r["subset"] == "train"]
    return [r["path"] for r in rows], np.asarray([classes.index(r["label"]) for r in rows])


def test_features_decoded_by_another_recipe_are_not_served(data, tmp_path, monkeypatch):
    """Decoding changed (sideways, squashed, another decoder): entries written before are not hit."""
    import tlzoo.images.decode

    cfg = config(data, tmp_path, "torch/resnet18", weights="none")
    assert train(cfg).metrics["feature_cache"] == "miss"
    assert train(cfg).metrics["feature_cache"] == "hit"
    with monkeypatch.context() as patched:
        patched.setattr(tlzoo.images.decode, "DECODE_FORMAT", tlzoo.images.decode.DECODE_FORMAT - 1)  # an older decoder
        assert train(cfg).metrics["feature_cache"] == "miss"
    assert train(cfg).metrics["feature_cache"] == "hit"
    padded = train(config(data, tmp_path, "torch/resnet18", weights="none", name="p", resize="pad"))
    assert padded.metrics["feature_cache"] == "miss"
    meta = json.loads((padded.run_dir / "classifier.json").read_text())
    assert meta["preprocessing"]["resize"] == "pad"


def test_evaluate_lists_each_unreadable_image_with_its_reason_even_a_whole_batch_of_them(data, tmp_path, mobilenet_in_cache):
    from tlzoo.runs.evaluation import evaluate_model

    run = train(config(data, tmp_path, "torch/mobilenet_v2", val_split=0.25)).run_dir
    for i in range(3):  # with batch size 2: a whole batch of broken files, and one beside a readable image
        (data / "red" / f"zz-{i}.png").write_bytes(b"not a png")
    metrics = evaluate_model(run, data, batch_size=2)
    skipped = {Path(s["path"]).name: s["error"] for s in metrics["skipped_images"]}
    assert sorted(skipped) == ["zz-0.png", "zz-1.png", "zz-2.png"]
    assert all(why.startswith("UnidentifiedImageError: cannot identify image file") for why in skipped.values()), skipped
    assert metrics["n"] == 24  # every readable image scored
    with pytest.raises(DataError, match=r"cannot read image .*zz-0.png: UnidentifiedImageError"):
        evaluate_model(run, data, batch_size=2, strict=True)
