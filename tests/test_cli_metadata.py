"""list-backbones, describe, plugins and --help: right output, fast, no framework imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import run_tlzoo

# numpy is no framework, but importing it (and tearing it down) costs these commands about a sixth of their time.
HEAVY = ("torch", "tensorflow", "keras", "onnxruntime", "onnx", "torchvision", "tf2onnx", "timm", "numpy")

PROBE = """
import runpy, sys
sys.argv = ["tlzoo", *{args!r}]
try:
    runpy.run_module("tlzoo", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["list-backbones"], ["list-backbones", "--json"], ["describe", "vgg16"],
     ["describe", "keras/xception", "--json"], ["plugins"], ["plugins", "--json"]],
)  # fmt: skip
def test_metadata_commands_import_no_framework(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stderr + "\n", result.stderr.splitlines()[-1]


def test_list_backbones_json_lists_18_over_both_frameworks():
    result = run_tlzoo("list-backbones", "--json")
    rows = json.loads(result.stdout)
    assert len([r for r in rows if r["framework"] in ("torch", "keras")]) == 20
    assert {r["framework"] for r in rows} == {"torch", "keras", "timm"}
    vgg = next(r for r in rows if r["id"] == "torch/vgg16")
    assert vgg == {
        "id": "torch/vgg16", "name": "vgg16", "framework": "torch", "input_size": [224, 224], "feature_dim": 512,
        "num_params": 14714688, "units": 13, "weights": [{"tag": "IMAGENET1K_V1", "on_disk": False}], "plugin": "torchvision", "short_name_taken_by": None,
    }  # fmt: skip


def _unit_rows(stdout: str) -> list[list[str]]:
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 4 and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_describe_vgg16_prints_the_same_13_convolutions_for_torch_and_keras():
    torch_rows = _unit_rows(run_tlzoo("describe", "vgg16").stdout)
    keras_rows = _unit_rows(run_tlzoo("describe", "vgg16", "--framework", "keras").stdout)
    assert [r[0] for r in torch_rows] == [r[0] for r in keras_rows] == [str(i) for i in range(1, 14)]
    assert {r[2] for r in torch_rows} == {"Conv2d"} and {r[2] for r in keras_rows} == {"Conv2D"}
    assert [r[3] for r in torch_rows] == [r[3] for r in keras_rows]
    assert torch_rows[0][3] == "1,792" and torch_rows[-1][3] == "2,359,808"


def test_describe_shows_preprocessing_and_weights():
    out = run_tlzoo("describe", "keras/vgg16").stdout
    assert "mode=caffe: BGR, values 0..255, mean=(103.939, 116.779, 123.68)" in out
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in out
    out = run_tlzoo("describe", "mobilenet_v2").stdout
    assert "IMAGENET1K_V1: mobilenet_v2-b0353104.pth (ImageNet-1K acc@1 71.878, acc@5 90.286; resize crop 0.875 bilinear; sha256 published)" in out


def test_unknown_backbone_exits_2_with_suggestions_and_no_traceback():
    result = run_tlzoo("describe", "resnet5")
    assert result.returncode == 2
    assert "unknown backbone 'resnet5'. Did you mean: resnet50," in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_debug_env_shows_the_traceback():
    result = run_tlzoo("describe", "resnet5", env={"TLZOO_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "UnknownBackboneError" in result.stderr
