"""int8 exports that keep accuracy: the head refitted on int8 features, and the sensitivity search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tlzoo.errors import UsageError
from tlzoo.runs.trained import load_run
from tlzoo_onnx.export import _model_inputs, export, split_set
from tlzoo_onnx.int8 import _head_parameters, _tensor_values, fit_head, quantize_within

from .conftest import run_tlzoo
from .test_export import runs, tiny_data  # noqa: F401  (module fixtures shared with the export tests)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_int8_head_is_refitted_on_the_int8_backbones_features(runs, tmp_path, framework):  # noqa: F811
    report = export(runs[framework], tmp_path / "m.int8.onnx", {"int8": True})
    assert report["int8_head_refit"] is True and len(report["int8_kept_fp32"]) == 1
    # What int8 buys is measured against fp32 on this machine and said.
    assert report["int8_speedup"] > 0
    assert f"int8 runs at {report['int8_speedup']:.2f}x fp32's speed (batch 1, this machine)" in report["summary"]
    assert report["int8_layers"] > 10 and report["int8_search"][0]["kept_fp32"] == 1
    model = onnx.load(report["path"])
    head = next(n for n in model.graph.node if n.name == report["int8_kept_fp32"][0])
    assert head.op_type in ("Gemm", "MatMul")
    # The head stays fp32 and everything before it is quantized.
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] in head.input[1:] for n in model.graph.node)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)

    # Its weights are exactly the run's head kind fitted again on the int8 file's own features of the training
    # images, with C chosen again on its features of the validation images.
    run = load_run(runs[framework])
    (images, labels), (val_images, val_labels) = split_set(run, "train"), split_set(run, "val", limit=256)
    features, val_features = _tensor_values(Path(report["path"]), head.input[0], _model_inputs(run, images, False),
                                            _model_inputs(run, val_images, False))  # fmt: skip
    expected = fit_head("softmax", features, labels, val_features, val_labels, len(run.classes), c=None, seed=0)
    w_name, b_name, transposed = _head_parameters(model.graph, head)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight = inits[w_name].T if transposed else inits[w_name]
    np.testing.assert_allclose(weight.reshape(expected.weights[0].shape), expected.weights[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inits[b_name].ravel(), expected.biases[0], rtol=1e-5, atol=1e-6)


def test_no_refit_head_keeps_the_trained_head_and_is_reported(runs, tmp_path):  # noqa: F811
    report = export(runs["torch"], tmp_path / "m.int8.onnx", {"int8": True, "refit_head": False, "int8_search": False})
    assert report["int8_head_refit"] is False and report["int8_head_note"] == "--no-refit-head"
    assert report["int8_kept_fp32"] == [] and report["int8_search"] == []
    assert any("head not refitted: --no-refit-head" in line for line in report["summary"])


def test_int8_only_options_are_refused_without_int8(runs, tmp_path):  # noqa: F811
    with pytest.raises(UsageError, match=r"^--no-int8-search, --no-refit-head: for --int8 exports only$"):
        export(runs["torch"], tmp_path / "m.onnx", {"int8_search": False, "refit_head": False})
    with pytest.raises(UsageError, match=r"^--calibration: for --int8 exports only$"):
        export(runs["torch"], tmp_path / "m.onnx", {"calibration": str(tmp_path)})
    assert not (tmp_path / "m.onnx").exists()


def test_cli_int8_flag_exports_and_reports(runs, tmp_path):  # noqa: F811
    out = tmp_path / "cli.int8.onnx"
    result = run_tlzoo("export", "onnx", str(runs["torch"]), "--int8", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["variant"] == "int8" and report["int8_head_refit"] is True and out.is_file()
    refused = run_tlzoo("export", "onnx", str(runs["torch"]), "--no-int8-search", "--out", str(tmp_path / "x.onnx"))
    assert refused.returncode == 2 and "--no-int8-search: for --int8 exports only" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "x.onnx").exists()


class _FakeQuantizer:
    """Layers L0..L15; a "quantized" file records which layers stayed fp32."""

    def __init__(self) -> None:
        self.names = [f"L{i}" for i in range(16)]

    def layers(self) -> list[str]:
        return list(self.names)

    def quantize(self, dest: Path, keep_fp32: list[str]) -> None:
        Path(dest).write_text(json.dumps(sorted(keep_fp32)))


@pytest.mark.parametrize("sensitive, expected_kept", [({"L3", "L11", "L12"}, 3), ({"L5"}, 1), (set(), 0)])
def test_search_keeps_the_fewest_most_sensitive_layers_within_max_drop(tmp_path, sensitive, expected_kept):
    """Each sensitive layer costs 2 points when quantized and distorts the output most; the others 0.05."""

    def accuracy(path: Path) -> tuple[float, float]:
        kept = set(json.loads(Path(path).read_text()))
        quantized = set(_FakeQuantizer().names) - kept
        loss = 0.02 * len(quantized & sensitive) + 0.0005 * len(quantized - sensitive)
        distance = sum(5.0 if name in sensitive else 0.1 for name in quantized)
        return 0.95 - loss, distance

    dest = tmp_path / "final.onnx"
    result = quantize_within(_FakeQuantizer(), dest, head=None, refit=None, accuracy=accuracy, fp32_accuracy=0.95,  # type: ignore[arg-type]
                             max_drop=1.0, tmp=tmp_path)  # fmt: skip
    assert sorted(result.kept_fp32) == sorted(sensitive) and len(result.kept_fp32) == expected_kept
    assert json.loads(dest.read_text()) == sorted(sensitive)  # the file written is the one that passed
    assert result.first_accuracy == pytest.approx(0.95 - 0.02 * len(sensitive) - 0.0005 * (16 - len(sensitive)))
    assert all(t["drop_points"] > 1.0 for t in result.trials[:-1] if t["kept_fp32"] < expected_kept)
    final = [t for t in result.trials if t["kept_fp32"] == expected_kept][-1]
    assert final["drop_points"] <= 1.0
    if sensitive:  # doubling then bisection: a handful of trials, not one per layer
        assert len(result.trials) <= 1 + 2 * 4


def test_search_reports_when_even_all_layers_in_fp32_miss(tmp_path):
    def accuracy(path: Path) -> tuple[float, float]:
        return 0.5, 1.0  # other operators stay quantized and ruin it whatever the layers

    result = quantize_within(_FakeQuantizer(), tmp_path / "final.onnx", head=None, refit=None, accuracy=accuracy,  # type: ignore[arg-type]
                             fp32_accuracy=0.95, max_drop=1.0, tmp=tmp_path)  # fmt: skip
    assert len(result.kept_fp32) == 16 and result.trials[-1]["drop_points"] == pytest.approx(45.0)
    assert (tmp_path / "final.onnx").is_file()


def test_a_search_that_keeps_most_layers_fp32_warns_that_little_speed_remains():
    from tlzoo_onnx.export import _summary

    report = {"path": "m.int8.onnx", "variant": "int8", "int8_layers": 53, "int8_kept_fp32": [f"L{i}" for i in range(52)],
              "int8_head_refit": False, "int8_search": [{}] * 13}  # fmt: skip
    lines, warnings = _summary(report, None)
    assert lines[1] == "int8: 1 of 53 layers quantized; the 52 most sensitive layers kept in fp32 by the search (13 trials)"
    assert warnings == ["to stay within the accuracy limit the search kept 52 of 53 layers in fp32, so little of int8's "
                        "speed remains (it may be slower than fp32); export fp32, or allow a larger drop with --max-drop"]
    report["int8_kept_fp32"] = ["head"]
    report["int8_head_refit"] = True
    assert _summary(report, None)[1] == []


def test_an_int8_file_slower_than_fp32_is_reported_with_the_search_that_made_it_so():
    from tlzoo_onnx.export import _summary

    report = {"path": "m.int8.onnx", "variant": "int8", "int8_layers": 53, "int8_kept_fp32": [f"L{i}" for i in range(52)],
              "int8_head_refit": False, "int8_search": [{}] * 13, "int8_speedup": 0.795, "batch": "dynamic"}  # fmt: skip
    lines, warnings = _summary(report, None)
    assert lines[2] == "int8 runs at 0.80x fp32's speed (batch 1, this machine)"
    assert warnings == ["the int8 file runs slower than fp32 here (0.80x at batch 1: the search kept 52 of 53 layers in "
                        "fp32 to stay within the accuracy limit); export fp32, or allow a larger drop with --max-drop"]
    report.update(int8_kept_fp32=[], int8_speedup=0.9, batch=8)  # slower with every layer int8: said as it is
    assert _summary(report, None)[1] == ["the int8 file runs slower than fp32 here (0.90x at batch 8); export fp32"]
    report["int8_speedup"] = 1.6
    assert _summary(report, None) == (["wrote m.int8.onnx (int8)", "int8: 53 of 53 layers quantized",
                                       "int8 runs at 1.60x fp32's speed (batch 8, this machine)"], [])
