"""ONNX export checked against the source model, for every built-in backbone; predict and evaluate."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import tlzoo
from tlzoo.errors import UsageError
from tlzoo.training.config import TrainConfig
from tlzoo.training.run import train
from tlzoo_onnx.export import ExportCheckFailed, export

from .conftest import run_tlzoo
from .datagen import write_folder


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny-export") / "data", per_class=8)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def trained_run(data, out, backbone, **kw):
    size = max(32, {"torch/inception_v3": 75, "keras/inception_v3": 75, "keras/xception": 71}.get(backbone, 32))
    cfg = TrainConfig(data=str(data), backbone=backbone, weights="none", image_size=size, batch_size=8,
                      out_dir=str(out), **kw)  # fmt: skip
    return train(cfg).run_dir


@pytest.mark.tlzoo_slow
@pytest.mark.parametrize("backbone_id", [s.id for s in tlzoo.list_backbones() if s.framework in ("torch", "keras")])  # timm: test_timm.py
def test_every_builtin_backbone_exports_and_matches_its_source(tiny_data, tmp_path, backbone_id, monkeypatch, cache_dir):
    monkeypatch.setenv("TLZOO_CACHE", str(cache_dir))
    run_dir = trained_run(tiny_data, tmp_path, backbone_id)
    report = export(run_dir)
    assert report["check"] == "passed"
    assert report["max_abs_diff"] <= 1e-4 and report["top1_agreement"] == 1.0
    model = onnx.load(report["path"])
    onnx.checker.check_model(model)
    assert model.ir_version <= 10
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["tlzoo.labels"]) == ["blue", "green", "red"]
    assert meta["tlzoo.backbone"] == backbone_id and meta["tlzoo.framework"] == backbone_id.split("/")[0]


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    import os

    os.environ["TLZOO_CACHE"] = str(out / "cache")
    return {
        "torch": trained_run(tiny_data, out, "torch/resnet18"),
        "keras": trained_run(tiny_data, out, "keras/vgg16"),
        "torch-ovr": trained_run(tiny_data, out, "torch/resnet18", head="logreg-ovr", name="ovr"),
    }


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_fp16_and_int8_report_accuracy_against_fp32(runs, tmp_path, framework, variant):
    report = export(runs[framework], tmp_path / f"m.{variant}.onnx", {variant: True})
    assert report["variant"] == variant and report["check"] == "reported"
    assert set(report) >= {"fp32_accuracy", "onnx_accuracy", "accuracy_change_vs_fp32", "top1_agreement_vs_fp32"}
    assert report["accuracy_change_vs_fp32"] == pytest.approx(report["onnx_accuracy"] - report["fp32_accuracy"])
    model = onnx.load(report["path"])
    types = {i.data_type for i in model.graph.initializer}
    if variant == "fp16":
        assert onnx.TensorProto.FLOAT16 in types
        assert report["top1_agreement_vs_fp32"] == 1.0
    else:
        assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def test_max_drop_gates_reduced_precision_exports(runs, tmp_path, monkeypatch):
    import tlzoo_onnx.export as onnx_export
    from onnx import numpy_helper

    report = export(runs["torch"], tmp_path / "ok.int8.onnx", {"int8": True, "max_drop": 100})
    assert report["check"] == "passed"

    def degraded_int8(src, dest, *args, **kwargs):  # a "quantized" model that always answers the first class
        from tlzoo_onnx.int8 import Int8Result

        model = onnx.load(str(src))
        for init in model.graph.initializer:
            if init.name.endswith("head.1.bias"):
                init.CopyFrom(numpy_helper.from_array(np.array([1e4, 0, 0], np.float32), init.name))
        onnx.save(model, str(dest))
        return Int8Result(layers=0)

    monkeypatch.setattr(onnx_export, "_to_int8", degraded_int8)
    out = tmp_path / "bad.int8.onnx"
    with pytest.raises(ExportCheckFailed, match=r"the int8 model loses .* accuracy points against fp32 .* allowed 1\)\. No file"):
        export(runs["torch"], out, {"int8": True, "max_drop": 1})
    assert not out.exists() and not list(tmp_path.glob(".tlzoo-export-*"))
    with pytest.raises(UsageError, match="--max-drop needs the check"):
        export(runs["torch"], out, {"int8": True, "max_drop": 1, "check": False})


def _real_photos():
    from skimage import data

    return [data.chelsea(), data.coffee(), data.astronaut(), data.rocket(), np.stack([data.camera()] * 3, -1)]


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_raw_input_model_predicts_like_the_framework_on_real_photos(runs, tmp_path, framework):
    from PIL import Image

    from tlzoo.runs.trained import load_run

    report = export(runs[framework], tmp_path / "raw.onnx", {"raw_input": True})
    predictor = tlzoo.Predictor(report["path"])
    assert predictor.raw_input and predictor.provider == "CPUExecutionProvider"
    run = load_run(runs[framework])
    photos = []
    for i, photo in enumerate(_real_photos()):
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(photo).save(path)
        photos.append(path)
    from tlzoo.images.decode import load_image

    images = np.stack([load_image(p, run.input_size, run.preprocessing) for p in photos])
    expected = run.predict_proba(images)
    got = predictor.predict_proba(images)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [p.top[0][0] for p in predictor.predict(photos, top_k=1)] == [run.classes[i] for i in expected.argmax(1)]
    # The graph resizes by itself: a full-size uint8 photo goes straight in.
    import onnxruntime as ort

    session = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    probs = session.run(None, {"images": _real_photos()[0][None]})[0]
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1.0) < 1e-5


def test_ovr_head_exports_normalized_probabilities(runs, tmp_path):
    report = export(runs["torch-ovr"], tmp_path / "ovr.onnx")
    assert report["check"] == "passed"


def test_failed_check_leaves_no_file(runs, tmp_path):
    out = tmp_path / "strict.onnx"
    with pytest.raises(ExportCheckFailed, match="No file was written"):
        export(runs["keras"], out, {"fp16": False, "atol": 0.0})
    assert not out.exists()
    assert not list(tmp_path.glob(".tlzoo-export-*"))


def test_bad_export_requests(runs, tmp_path):
    with pytest.raises(UsageError, match=r"--opset 30 is not supported: use 13\.\.23"):
        export(runs["torch"], tmp_path / "x.onnx", {"opset": 30})
    with pytest.raises(UsageError, match="unknown export format 'onx'. Did you mean: onnx"):
        tlzoo.export(runs["torch"], format="onx")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    result = run_tlzoo("export", "onnx", str(empty))
    assert result.returncode == 2 and "has no trained classifier (classifier.json)" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_cli_export_predict_evaluate(runs, tiny_data, tmp_path):
    out = tmp_path / "cli.onnx"
    exported = run_tlzoo("export", "onnx", str(runs["torch"]), "--out", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["check"] == "passed"
    predicted = run_tlzoo("predict", str(out), str(tiny_data / "red"), str(tiny_data / "blue" / "000.png"),
                          "--top-k", "2", "--json")  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(predicted.stdout)["predictions"]
    assert len(rows) == 9 and all(len(r["top"]) == 2 for r in rows)
    onnx_metrics = json.loads(run_tlzoo("evaluate", str(out), "--data", str(tiny_data), "--json").stdout)
    run_metrics = json.loads(run_tlzoo("evaluate", str(runs["torch"]), "--data", str(tiny_data), "--json").stdout)
    assert onnx_metrics["accuracy"] == run_metrics["accuracy"] and onnx_metrics["n"] == 24
    assert onnx_metrics["log_loss"] == pytest.approx(run_metrics["log_loss"], abs=1e-4)


def test_predict_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = run_tlzoo("predict", str(bad), str(tmp_path))
    assert result.returncode == 2 and "is not a model onnxruntime can load" in result.stderr
    result = run_tlzoo("predict", str(tmp_path / "missing.onnx"), str(tmp_path))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_predict_rejects_non_image_input(runs, tmp_path):
    report = export(runs["torch"], tmp_path / "m.onnx")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    result = run_tlzoo("predict", report["path"], str(text), "--strict")
    assert result.returncode == 2 and "is not an image tlzoo can read" in result.stderr
    result = run_tlzoo("predict", report["path"], str(text))
    assert result.returncode == 1 and "none of the 1 image(s) given could be read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_rotated_photos_predict_and_evaluate_as_upright_ones_run_and_onnx(runs, tiny_data, tmp_path, framework):
    from PIL import Image

    from tlzoo.runs.trained import load_run

    from .test_decode import save_oriented

    run = load_run(runs[framework])
    upright, rotated = tmp_path / "upright", tmp_path / "rotated"
    for cls in run.classes:
        (upright / cls).mkdir(parents=True)
        (rotated / cls).mkdir(parents=True)
        for i, path in enumerate(sorted((tiny_data / cls).iterdir())[:3]):
            pixels = np.asarray(Image.open(path).convert("RGB"))
            Image.fromarray(pixels).save(upright / cls / f"{i}.png")
            save_oriented(pixels, 6 + i % 3, rotated / cls / f"{i}.png")  # orientations 6, 7, 8: what phones write
    onnx_file = export(runs[framework], tmp_path / "m.onnx")["path"]
    for model in (runs[framework], onnx_file):
        up = {p.path.replace(str(upright), ""): p.top for p in tlzoo.predict(model, [upright], top_k=3)}
        rot = {p.path.replace(str(rotated), ""): p.top for p in tlzoo.predict(model, [rotated], top_k=3)}
        assert up.keys() == rot.keys() and len(up) == 9
        for name in up:
            assert [c for c, _ in rot[name]] == [c for c, _ in up[name]]
            np.testing.assert_allclose([p for _, p in rot[name]], [p for _, p in up[name]], atol=1e-6)
        a, b = tlzoo.evaluate(model, upright), tlzoo.evaluate(model, rotated)
        assert a["accuracy"] == b["accuracy"] and a["log_loss"] == pytest.approx(b["log_loss"], abs=1e-6)


@pytest.mark.parametrize("policy", ["squash", "crop", "pad"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_the_raw_input_front_resizes_like_the_decoder(tmp_path, policy, interpolation):
    """The in-graph resize against the decoder's, on a real photo scaled down about 7x (and a 1.5x upscale)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from skimage import data

    from tlzoo.images.decode import resize_array
    from tlzoo.specs import KERAS_RAW
    from tlzoo_onnx.front import _front

    prep = KERAS_RAW.with_resize(policy, crop_fraction=0.875, interpolation=interpolation)  # pixels out, unnormalized
    size = (64, 48)
    identity = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "id",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64, 48, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64, 48, 3])]), opset_imports=[helper.make_opsetid("", 18)])  # fmt: skip
    identity.ir_version = 9
    front = _front(prep, size, "NHWC", 18, identity)
    session = ort.InferenceSession(front.SerializeToString(), providers=["CPUExecutionProvider"])
    for photo in (data.astronaut(), data.chelsea()[:40, :30]):
        graph = session.run(None, {"tlzoo_raw_images": photo[None]})[0][0]
        decoder = resize_array(photo, size, prep).astype(np.float32)
        assert graph.shape == decoder.shape
        assert np.abs(graph - decoder).mean() < 1.5, (policy, interpolation, np.abs(graph - decoder).mean())
