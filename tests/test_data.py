"""Data layouts, image modes and bad input, with the exact messages users see."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlzoo import images as datamod
from tlzoo.errors import DataError
from tlzoo.images.decode import load_image
from tlzoo.images.normalize import normalize
from tlzoo.specs import KERAS_CAFFE, KERAS_TF, TORCHVISION_IMAGENET

from .datagen import write_folder


def test_every_image_mode_becomes_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # one transparent pixel: composited on white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((8, 8, 3), 77, np.uint8)).convert("P").save(tmp_path / "palette.png")
    Image.fromarray((np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    for name in ("gray", "rgba", "palette", "deep"):
        out = load_image(tmp_path / f"{name}.png", (8, 8))
        assert out.shape == (8, 8, 3) and out.dtype == np.uint8, name
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png", (8, 8))[..., 1], gray)
    rgba_out = load_image(tmp_path / "rgba.png", (8, 8))
    assert tuple(rgba_out[0, 0]) == (255, 255, 255) and tuple(rgba_out[1, 1]) == (255, 0, 0)
    deep = load_image(tmp_path / "deep.png", (8, 8))
    assert deep[..., 0].max() == round(63000 / 257) and deep[0, 0, 0] == 0


def test_normalize_matches_each_convention():
    img = np.array([[[255, 128, 0]]], dtype=np.uint8)[None]
    np.testing.assert_allclose(normalize(img, TORCHVISION_IMAGENET)[0, 0, 0],
                               [(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0 - 0.406) / 0.225], rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(normalize(img, KERAS_CAFFE)[0, 0, 0], [0 - 103.939, 128 - 116.779, 255 - 123.68], rtol=1e-6)
    np.testing.assert_allclose(normalize(img, KERAS_TF)[0, 0, 0], [1.0, 128 / 127.5 - 1, -1.0], rtol=1e-6)


def test_scan_skips_non_images_and_csv_layout(tmp_path):
    root = write_folder(tmp_path / "data", per_class=3)
    (root / "red" / "notes.txt").write_text("not an image")
    samples = datamod.scan(root)
    assert len(samples) == 9 and {s.label for s in samples} == {"red", "green", "blue"}
    csv = tmp_path / "data" / "labels.csv"
    csv.write_text("path,label\nred/000.png,red\ngreen/001.png,green\n")
    assert [(s.path.name, s.label) for s in datamod.scan(csv)] == [("000.png", "red"), ("001.png", "green")]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "nope", "data path {p}/nope does not exist"),
        (lambda p: (p / "flat").mkdir() or p / "flat", "{p}/flat has no class folders"),
        (lambda p: (p / "d" / "a").mkdir(parents=True) or (p / "d" / "b").mkdir() or write_folder(p / "d", 2, classes=("red",)),
         "class folder(s) with no images in {p}/d: a, b"),
        (lambda p: (p / "x.csv").write_text("file,class\na.png,1\n") and p / "x.csv",
         "{p}/x.csv must have a header with a 'path' column and a 'label' column (one class an image), a 'labels' "
         "column (several, a;b) or one 0/1 column per label; found ['file', 'class']"),
        (lambda p: (p / "y.csv").write_text("path,label\nmissing.png,1\n") and p / "y.csv",
         "{p}/y.csv names 1 file(s) that do not exist (relative to {p}): missing.png"),
    ],
)  # fmt: skip
def test_bad_layouts_have_clear_messages(tmp_path, setup, message):
    source = setup(tmp_path)
    with pytest.raises(DataError) as info:
        datamod.scan(source)
    assert message.format(p=tmp_path) in str(info.value)


def test_corrupt_images_are_skipped_and_listed_or_stop_with_strict(tmp_path):
    root = write_folder(tmp_path / "data", per_class=3)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    samples = datamod.scan(root)
    loaded = datamod.load(samples, (16, 16))
    assert len(loaded) == 9
    assert [p for p, _ in loaded.skipped] == [str(root / "red" / "broken.png")]
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        datamod.load(samples, (16, 16), strict=True)


def test_single_class_is_refused(tmp_path):
    root = write_folder(tmp_path / "data", per_class=3, classes=("red",))
    loaded = datamod.load(datamod.scan(root), (16, 16))
    with pytest.raises(DataError, match=r"training data has a single class \(red\); a classifier needs at least two"):
        datamod.check_classes(loaded)


def test_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(3), 10)
    a = datamod.stratified_split(labels, 0.2, seed=3)
    b = datamod.stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    assert np.bincount(labels[a[1]]).tolist() == [2, 2, 2]


def test_embedded_digits_written_once_even_by_processes_starting_together(tmp_path):
    import subprocess
    import sys

    code = "import sys; from tlzoo.images.datasets import ensure_digits; print(ensure_digits(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]  # fmt: skip
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert {o.strip() for o, _ in outs} == {str(tmp_path / "digits")}
    scanned = datamod.scan(tmp_path / "digits")
    assert len(scanned) == 1797 and sorted({s.label for s in scanned}) == [str(d) for d in range(10)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]  # no temporary folder left behind


def test_predict_decodes_a_few_batches_ahead_on_threads_and_keeps_the_order(tmp_path, monkeypatch):
    import threading

    from tlzoo.runs import inference

    data = write_folder(tmp_path / "d", per_class=20)
    (data / "red" / "010b.png").write_bytes(b"not an image")
    started: list[object] = []
    threads: set[str] = set()
    real = inference.decode

    def decode(item, size, prep=None):  # type: ignore[no-untyped-def]
        threads.add(threading.current_thread().name)
        started.append(item)
        return real(item, size, prep)

    monkeypatch.setattr(inference, "decode", decode)
    monkeypatch.setattr("tlzoo.images.batches.default_threads", lambda: 2)
    predicted: list[int] = []

    class ByColour:  # the class is the brightest mean channel: red, green, blue
        classes = ["red", "green", "blue"]
        input_size = (16, 16)
        preprocessing = None

        def predict_proba(self, images, batch_size=32):  # type: ignore[no-untyped-def]
            assert len(started) <= sum(predicted) + len(images) + 3 * 8, "decoding runs at most three batches ahead"
            predicted.append(len(images))
            return np.eye(3)[images.reshape(len(images), -1, 3).mean(1).argmax(1)]

    skipped = []
    out = list(inference.predict_stream(ByColour(), [data], batch_size=8, on_skip=lambda n, why: skipped.append(n)))
    assert len(out) == 60 and sum(predicted) == 60 and predicted[:7] == [8] * 7
    assert [Path(p.path).parent.name for p in out] == [p.top[0][0] for p in out]  # each image's own prediction
    assert [p.path for p in out] == sorted(p.path for p in out)  # in the folder's order
    assert skipped == [str(data / "red" / "010b.png")]
    assert threads and all(name.startswith("tlzoo-decode") for name in threads)
