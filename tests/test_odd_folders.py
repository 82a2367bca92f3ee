"""Real-world folders: what counts as an image, hidden folders, symlinks, odd names, tlzoo's own output.

Each case asserts what a user should get: the right result, a warning naming what was found, or one
``Error:`` line with nothing left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlzoo import images as datamod
from tlzoo.errors import DataError
from tlzoo.runs.metrics import classification_metrics, most_confused

from .conftest import run_tlzoo
from .datagen import make_image, write_folder


def names(samples) -> list[str]:
    return sorted(f"{s.label}/{s.path.name}" for s in samples)


def test_tlzoo_never_trains_its_own_output(tmp_path):
    data = write_folder(tmp_path / "photos", per_class=4)
    (data / "runs" / "first").mkdir(parents=True)  # a run's plots, from `cd photos && tlzoo train --data .`
    Image.fromarray(make_image("red", 0)).save(data / "runs" / "first" / "confusion_matrix.png")
    done = run_tlzoo("train", "--data", ".", "-b", "resnet18", "--weights", "none", "--image-size", "32",
                     "--name", "r", cwd=data, env={"TLZOO_CACHE": str(data / ".cache")})  # fmt: skip
    assert done.returncode == 0, done.stderr
    labels = json.loads((data / "runs" / "r" / "labels.json").read_text())
    assert labels == ["blue", "green", "red"]


def test_hidden_folders_are_skipped_like_hidden_files(tmp_path):
    data = write_folder(tmp_path / "d", per_class=2)
    (data / "red" / ".thumbnails").mkdir()
    Image.fromarray(make_image("blue", 9)).save(data / "red" / ".thumbnails" / "t.png")
    Image.fromarray(make_image("blue", 9)).save(data / "red" / ".hidden.png")
    assert "red/t.png" not in names(datamod.scan(data)) and len(datamod.scan(data)) == 6


def test_symlinks_follow_one_rule_folders_and_files_alike(tmp_path):
    data = write_folder(tmp_path / "d", per_class=2)
    elsewhere = write_folder(tmp_path / "more", per_class=1, classes=("red",))
    (data / "red" / "linked").symlink_to(elsewhere / "red", target_is_directory=True)  # a sub-folder link
    (data / "red" / "loop").symlink_to(data / "red", target_is_directory=True)  # visited once, no loop
    (data / "orange").symlink_to(elsewhere / "red", target_is_directory=True)  # a class-folder link
    found = names(datamod.scan(data))
    assert found.count("red/000.png") == 2  # its own and the linked folder's, once each
    assert "orange/000.png" in found and len(found) == 2 * 3 + 1 + 1


def test_what_pillow_opens_counts_and_what_was_skipped_by_suffix_is_listed(tmp_path):
    data = write_folder(tmp_path / "d", per_class=2)
    (data / "jfif").mkdir()
    for i, suffix in enumerate((".jfif", ".jpe", ".avif")):
        Image.fromarray(make_image("red", i)).save(data / "jfif" / f"{i}{suffix}", format="AVIF" if suffix == ".avif" else "JPEG")
    (data / "red" / "notes.txt").write_text("x")
    (data / "red" / "phone.heic").write_bytes(b"\0" * 10)
    ignored: list[str] = []
    found = names(datamod.scan(data, ignored=ignored))
    assert {"jfif/0.jfif", "jfif/1.jpe", "jfif/2.avif"} <= set(found)
    assert sorted(Path(p).name for p in ignored) == ["notes.txt", "phone.heic"]
    assert datamod.ignored_text(ignored) == "2 file(s) that are not images Pillow opens here, by suffix: .txt (1), .heic (1)"
    files = datamod.labelled(datamod.scan(data))
    [batch] = datamod.decode_batches(files.paths, (16, 16), batch_size=16)
    assert not batch.skipped  # every one of them decodes


def test_names_that_are_not_utf8_train_predict_and_compare(tmp_path):
    """Latin-1 names from an old archive: a class folder and files. They train (the class becomes a label with
    backslash escapes, as labels travel in UTF-8 metadata), split.csv keeps each name's bytes and stays UTF-8,
    predict writes them to CSV, and compare trains on the folder."""
    import csv

    data = write_folder(tmp_path / "d", per_class=6)
    latin = data / os.fsdecode(b"caf\xe9")  # a class folder
    latin.mkdir()
    for i in range(6):
        Image.fromarray(make_image("blue", 20 + i)).save(latin / os.fsdecode(b"\xe9t\xe9-%d.png" % i))
    Image.fromarray(make_image("red", 5)).save(data / "red" / os.fsdecode(b"caf\xe9.png"))
    found = datamod.labelled(datamod.scan(data))
    assert "caf\\xe9" in found.classes and os.fsencode(found.paths[-1]).startswith(os.fsencode(str(data)))
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    for strategy in ("feature-extract", "fine-tune"):
        done = run_tlzoo("train", "--data", str(data), "--weights", "none", "--backbone", "resnet18", "--image-size",
                         "32", "--strategy", strategy, "--epochs", "1", "--out-dir", str(tmp_path / "out"), "--name",
                         strategy, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
    run = tmp_path / "out" / "fine-tune"
    split = (run / "split.csv").read_bytes().decode("utf-8")  # valid UTF-8, whatever the names
    rows = list(csv.DictReader(split.splitlines()))
    odd = [r for r in rows if r["path_bytes"]]
    assert len(odd) == 7 and all("\\xe9" in r["path"] for r in odd)
    assert {os.fsencode(os.fsdecode(__import__("urllib.parse").parse.unquote_to_bytes(r["path_bytes"]))) for r in odd} \
        == {os.fsencode(str(p)) for p in [*latin.iterdir(), data / "red" / os.fsdecode(b"caf\xe9.png")]}
    assert "caf\\xe9" in json.loads((run / "labels.json").read_text())
    from tlzoo.runs.runfiles import RunFiles

    read = RunFiles(run).read_split(None, json.loads((run / "labels.json").read_text()))
    assert sorted(os.fsencode(r["path"]) for r in read if r["path_bytes"]) == sorted(
        os.fsencode(str(p)) for p in [*latin.iterdir(), data / "red" / os.fsdecode(b"caf\xe9.png")])
    out = tmp_path / "pred.csv"
    predicted = run_tlzoo("predict", str(run), str(latin), "--out", str(out), env=env)
    assert predicted.returncode == 0, predicted.stderr
    assert "\\xe9t\\xe9-0.png" in predicted.stdout
    written = out.read_bytes().decode("utf-8")
    assert written.count("\\xe9t\\xe9-") == 6
    compared = run_tlzoo("compare", "--data", str(data), "--backbones", "resnet18", "--strategies", "feature-extract",
                         "--weights", "none", "--image-size", "32", "--out", str(tmp_path / "cmp"), "--no-onnx", "--json",
                         env=env)  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    assert json.loads(compared.stdout)[0]["status"] == "ok"


def test_macro_f1_averages_the_classes_present():
    proba = np.eye(3)[[0, 0, 1, 1]]  # classes 0 and 1 present and predicted right; class 2 absent
    metrics = classification_metrics(np.array([0, 0, 1, 1]), proba, ["a", "b", "c"])
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0 and metrics["macro_f1_classes"] == 2


def test_a_confusion_plot_of_many_classes_shows_the_most_confused(tmp_path):
    from tlzoo.runs.metrics import plot_confusion

    n = 200
    matrix = np.diag(np.full(n, 5))
    matrix[7, 9] = matrix[150, 3] = 4
    shown = most_confused(matrix, 30)
    assert len(shown) == 30 and {3, 7, 9, 150} <= set(shown)
    started = time.perf_counter()
    plot_confusion(matrix.tolist(), [f"class{i}" for i in range(n)], tmp_path / "cm.png", "title")
    assert time.perf_counter() - started < 30
    width, height = Image.open(tmp_path / "cm.png").size
    assert width <= 2000 and height <= 2000


def test_a_replaced_file_that_kept_its_size_and_mtime_is_not_served_stale_features(tmp_path):
    data = write_folder(tmp_path / "d", per_class=1)
    path = data / "red" / "000.png"
    before = datamod.labelled(datamod.scan(data)).stats()
    st = path.stat()
    replacement = tmp_path / "other.png"
    Image.fromarray(make_image("red", 0)[::-1].copy()).save(replacement)
    data_bytes = replacement.read_bytes()
    path.write_bytes(data_bytes[: st.st_size].ljust(st.st_size, b"\0"))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, as cp -p and rsync -a keep it
    after = datamod.labelled(datamod.scan(data)).stats()
    assert [r[:3] for r in after] == [r[:3] for r in before] and after != before  # the ctime tells


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_before_the_first_epoch_leaves_nothing(tmp_path):
    data = write_folder(tmp_path / "d", per_class=40, size=64)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "tlzoo", "train", "--data", str(data), "-b", "resnet18",
                                "--weights", "none", "-s", "fine-tune", "--image-size", "64", "--out-dir", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and any(out.rglob("config.yaml"))):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert not out.exists() or not any(out.iterdir())


def _interrupted_run(tmp_path, data):
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.reporter import Reporter
    from tlzoo.training.run import TrainingInterrupted, train

    class Interrupt(Reporter):
        def epoch(self, row):
            raise KeyboardInterrupt

    cfg = TrainConfig(data=str(data), backbone="torch/resnet18", weights="none", strategy="fine-tune", image_size=32,
                      batch_size=8, epochs=2, out_dir=str(tmp_path / "runs"), name="r")  # fmt: skip
    with pytest.raises(TrainingInterrupted):
        train(cfg, Interrupt())
    return tmp_path / "runs" / "r"


def test_resume_trains_on_the_recorded_split_from_anywhere(tmp_path, monkeypatch):
    import csv

    from tlzoo.training.run import train
    from tlzoo.training.config import TrainConfig

    data = write_folder(tmp_path / "photos", per_class=8)
    run = _interrupted_run(tmp_path, data)
    before = list(csv.DictReader(open(run / "split.csv")))
    assert all(Path(r["path"]).is_absolute() and r["bytes"] for r in before)
    write_folder(tmp_path / "photos", per_class=12)  # images added to the folder after the split
    elsewhere = tmp_path / "elsewhere"
    write_folder(elsewhere / "photos", per_class=3)  # a folder of the same name where the resume is typed
    monkeypatch.chdir(elsewhere)
    result = train(TrainConfig(), resume=run)
    after = list(csv.DictReader(open(run / "split.csv")))
    assert [(r["path"], r["subset"]) for r in after] == [(r["path"], r["subset"]) for r in before]
    assert result.metrics["n"] == sum(r["subset"] == "val" for r in before)


def test_resume_refuses_a_split_whose_files_went_missing_or_changed(tmp_path):
    data = write_folder(tmp_path / "photos", per_class=8)
    run = _interrupted_run(tmp_path, data)
    victim = data / "red" / "000.png"
    original = victim.read_bytes()
    victim.write_bytes(original + b"\0")  # changed
    done = run_tlzoo("train", "--resume", str(run))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "1 of its 24 files are changed since" in done.stderr and "000.png" in done.stderr
    victim.unlink()  # missing
    done = run_tlzoo("train", "--resume", str(run))
    assert "1 of its 24 files are missing since" in done.stderr


def test_small_data_trains_by_default_and_names_the_classes_too_small(tmp_path):
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.reporter import Reporter
    from tlzoo.training.run import train

    data = tmp_path / "d"
    colours = ["red", "green", "blue"]
    for k in range(10):  # 10 classes of 4 images: scikit-learn alone refuses the default 20 % split
        (data / f"c{k}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(make_image(colours[k % 3], 10 * k + i)).save(data / f"c{k}" / f"{i}.png")
    (data / "lonely").mkdir()
    Image.fromarray(make_image("red", 99)).save(data / "lonely" / "0.png")
    told = []

    class Keep(Reporter):
        def warn(self, message):
            told.append(message)

    cfg = TrainConfig(data=str(data), backbone="torch/resnet18", weights="none", image_size=32, c=1.0,
                      out_dir=str(tmp_path / "runs"))  # fmt: skip
    for seed in range(5):  # the one image of "lonely" always trains, whatever the seed
        result = train(TrainConfig(**{**cfg.to_dict(), "seed": seed, "name": f"s{seed}"}), Keep())
        split = (result.run_dir / "split.csv").read_text()
        assert "lonely/0.png,lonely,train" in split
        assert result.metrics["n"] == 10
    assert any("1 class(es) too small to hold an image out for validation (--val-split 0.2)" in m and "lonely (1)" in m
               for m in told)  # fmt: skip


def test_a_split_nothing_can_be_held_out_of_is_one_line_with_the_fix(tmp_path):
    data = tmp_path / "d"
    for cls in ("red", "green"):
        (data / cls).mkdir(parents=True)
        Image.fromarray(make_image(cls, 0)).save(data / cls / "0.png")
    done = run_tlzoo("train", "--data", str(data), "--weights", "none", "--out-dir", str(tmp_path / "out"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no class has enough images to hold one out for validation (green, red): add images, or give a separate --val folder" in done.stderr
    assert not (tmp_path / "out").exists()


def test_what_looks_wrong_about_a_folder_is_said():
    assert "one level too high" in datamod.layout_warnings(["train", "val"])[0]
    [case] = datamod.layout_warnings(["Red", "blue", "red"])
    assert "'Red', 'red' differ only in case or Unicode normalization" in case
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert len(datamod.layout_warnings([nfc, nfd, "tea"])) == 1
    assert datamod.layout_warnings(["cat", "dog"]) == []


def test_a_csv_that_gives_one_image_two_labels_is_refused(tmp_path):
    data = write_folder(tmp_path / "d", per_class=2)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,label\nd/red/000.png,red\nd/blue/000.png,blue\nd/red/000.png,blue\n")
    with pytest.raises(DataError, match=r"line 4: d/red/000.png is labelled 'blue' here and 'red' on line 2"):
        datamod.scan(csv_file)


def test_val_equal_to_data_is_refused(tmp_path):
    data = write_folder(tmp_path / "d", per_class=3)
    done = run_tlzoo("train", "--data", str(data), "--val", str(data), "--weights", "none", "--out-dir", str(tmp_path / "o"))
    assert done.returncode == 1 and "--val" in done.stderr and "is the --data folder itself" in done.stderr


def test_predict_shows_a_name_that_is_not_utf8_with_escapes(tmp_path):
    data = write_folder(tmp_path / "d", per_class=2)
    Image.fromarray(make_image("red", 5)).save(data / "red" / os.fsdecode(b"caf\xe9.png"))
    calls = []

    class Model:
        classes = ["red", "green", "blue"]
        input_size = (16, 16)
        preprocessing = None

        def predict_proba(self, images, batch_size=32):
            calls.append(len(images))
            return np.full((len(images), 3), 1 / 3)

    from tlzoo.runs.inference import predict_stream

    names = [p.path for p in predict_stream(Model(), [data / "green", data / "red"], batch_size=1)]
    assert names[-1].endswith("red/caf\\xe9.png") and len(calls) == 5


def test_library_warnings_become_tlzoo_warnings_that_name_the_file(tmp_path):
    import io

    data = write_folder(tmp_path / "d", per_class=4)
    (data / "\u732b").mkdir()  # a class name the plot's font has no glyph for
    for i in range(4):
        Image.fromarray(make_image("blue", 50 + i)).save(data / "\u732b" / f"{i}.png")
    buf = io.BytesIO()
    Image.fromarray(make_image("red", 7)).save(buf, "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\xff\xff")
    (data / "red" / "bad_exif.jpg").write_bytes(buf.getvalue())
    done = run_tlzoo("train", "--data", str(data), "-b", "resnet18", "--weights", "none", "--image-size", "32",
                     "--out-dir", str(tmp_path / "out"), env={"TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"warning: {data / 'red' / 'bad_exif.jpg'}: Corrupt EXIF data" in done.stderr
    assert "site-packages" not in done.stderr and "UserWarning" not in done.stderr
    assert sum("the plot's font lacks" in line for line in done.stderr.splitlines()) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("delay", [0.4, 0.8, 1.5])
def test_ctrl_c_in_the_first_moments_is_one_line(tmp_path, delay):
    data = write_folder(tmp_path / "d", per_class=4)
    process = subprocess.Popen([sys.executable, "-m", "tlzoo", "train", "--data", str(data), "--weights", "none",
                                "--out-dir", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal")
    # 130, or ended by SIGINT itself (-2: CPython re-raises an interrupt that arrived mid-import); a shell shows 130
    assert process.returncode in (130, -signal.SIGINT) and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "Error: interrupted"


def test_the_same_image_in_two_classes_is_found(tmp_path):
    import shutil

    data = write_folder(tmp_path / "d", per_class=3)
    shutil.copy(data / "red" / "001.png", data / "blue" / "copy.png")
    shutil.copy(data / "red" / "002.png", data / "red" / "again.png")  # twice in one class: not a labelling error
    files = datamod.labelled(datamod.scan(data))
    assert datamod.same_files_in_two_classes(files) == [[str(data / "blue" / "copy.png"), str(data / "red" / "001.png")]]


def test_resume_of_a_run_stopped_before_its_first_epoch_is_refused_before_decoding(tmp_path, monkeypatch):
    from tlzoo.errors import UsageError
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.run import train

    data = write_folder(tmp_path / "photos", per_class=8)
    run = _interrupted_run(tmp_path, data)
    for state in run.glob("last_state*"):
        state.unlink()  # as a kill -9 before the first checkpoint leaves it
    monkeypatch.setattr(datamod, "load_image", lambda *a, **k: pytest.fail("decoded an image"))
    with pytest.raises(UsageError, match="has no resumable state: it was stopped before its first epoch finished"):
        train(TrainConfig(), resume=run)
