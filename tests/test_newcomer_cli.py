"""The CLI as a new user meets it: output piped to a file or a pager, the same -q everywhere, a backbone named with
its weights tag as timm and `tlzoo weights import` write it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_tlzoo
from .datagen import write_folder

COMMANDS = [["list-backbones"], ["describe"], ["plugins"], ["train"], ["evaluate"], ["predict"], ["compare"],
            ["advise"], ["datasets"], ["spec"], ["weights", "import"], ["cache", "list"], ["cache", "clear"],
            ["export", "onnx"]]  # fmt: skip


@pytest.mark.parametrize("args", [["list-backbones"], ["list-backbones", "--framework", "timm", "--filter", "*dinov2*"],
                                  ["plugins"], ["describe", "vit_b_16"]])  # fmt: skip
def test_piped_output_is_whole(args):
    done = run_tlzoo(*args, env={"COLUMNS": "80"})  # piped, at a pager's width: rich would cut cells with …
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout and done.stdout.strip()


def test_the_help_names_every_kind_of_backbone():
    done = run_tlzoo("--help")
    assert "torchvision, Keras and timm backbones" in " ".join(done.stdout.split())


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_takes_the_same_quiet(command):
    done = run_tlzoo(*command, "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "-q" in text and "--quiet" in text, text[-500:]


def test_quiet_gives_the_result_alone(tmp_path):
    ids = run_tlzoo("list-backbones", "-q")
    lines = ids.stdout.split()
    assert ids.returncode == 0 and "torch/vgg16" in lines and "timm/resnet50" in lines and len(lines) > 1000
    assert all("/" in line and " " not in line for line in lines)
    data = write_folder(tmp_path / "d", per_class=6)
    env = {"TLZOO_CACHE": str(tmp_path / "cache")}
    trained = run_tlzoo("train", "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--data", str(data),
                        "--out-dir", str(tmp_path / "runs"), "--name", "q", "-q", env=env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    exported = run_tlzoo("export", "onnx", str(tmp_path / "runs" / "q"), "-q", env=env)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == str(tmp_path / "runs" / "q" / "model.onnx")
    predicted = run_tlzoo("predict", str(tmp_path / "runs" / "q"), str(data / "red"), "-q", env=env)
    assert predicted.returncode == 0 and predicted.stderr == "" and len(predicted.stdout.splitlines()) == 6
    evaluated = run_tlzoo("evaluate", str(tmp_path / "runs" / "q"), "--data", str(data), "-q", env=env)
    assert evaluated.returncode == 0 and len(evaluated.stdout.strip().splitlines()) == 1 and "per class" not in evaluated.stdout
    cleared = run_tlzoo("cache", "clear", "all", "-q", env=env)
    assert cleared.returncode == 0 and cleared.stdout == ""


def test_a_backbone_named_with_its_weights_tag(tmp_path, mobilenet_in_cache):
    import tlzoo

    described = run_tlzoo("describe", "timm/resnet50.a1_in1k", "--json")
    assert described.returncode == 0 and json.loads(described.stdout)["id"] == "timm/resnet50"
    unknown = run_tlzoo("describe", "timm/resnet50.no_such_tag")
    assert unknown.returncode == 2 and "has no weights tagged 'no_such_tag'; its tags: a1_in1k" in unknown.stderr
    data = write_folder(tmp_path / "d", per_class=6)
    args = ["train", "--data", str(data), "--image-size", "32", "--out-dir", str(tmp_path / "runs")]
    both = run_tlzoo(*args, "--backbone", "mobilenet_v2.IMAGENET1K_V1", "--weights", "none")
    assert both.returncode == 2 and "names the weights IMAGENET1K_V1 and --weights none other ones" in both.stderr
    tagged = run_tlzoo(*args, "--backbone", "mobilenet_v2.IMAGENET1K_V1", "--name", "tagged", "--json")
    assert tagged.returncode == 0, tagged.stderr
    config = (tmp_path / "runs" / "tagged" / "config.yaml").read_text()
    assert "backbone: torch/mobilenet_v2" in config and "weights: IMAGENET1K_V1" in config
    assert json.loads((tmp_path / "runs" / "tagged" / "classifier.json").read_text())["weights"] == "IMAGENET1K_V1"
    # the Python API, and a compare string
    backbone = tlzoo.get_backbone("mobilenet_v2.IMAGENET1K_V1", pretrained=True, input_size=32)
    assert backbone.weights.tag == "IMAGENET1K_V1" and backbone.weights.verified
    with pytest.raises(tlzoo.TlzooError, match="other ones"):
        tlzoo.get_backbone("mobilenet_v2.IMAGENET1K_V1", pretrained="IMAGENET1K_V2")
    compared = run_tlzoo("compare", "--data", str(data), "--backbones", "mobilenet_v2.IMAGENET1K_V1",
                         "--strategies", "feature-extract", "--image-size", "32", "--out", str(tmp_path / "cmp"),
                         "--no-onnx", "--json")  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    [row] = json.loads(compared.stdout)
    assert row["status"] == "ok", row
    assert "IMAGENET1K_V1" in (Path(row["run_dir"]) / "classifier.json").read_text()
    advised = run_tlzoo("advise", "--data", str(data), "--backbones", "mobilenet_v2.IMAGENET1K_V1", "--image-size",
                        "32", "--budget", "1", "--json")  # fmt: skip
    assert advised.returncode == 0, advised.stderr
    advice = json.loads(advised.stdout)
    assert advice["evidence"][0]["weights"] == "IMAGENET1K_V1" and "--backbone mobilenet_v2.IMAGENET1K_V1" in advice["command"]
    refused = run_tlzoo("advise", "--data", str(data), "--backbones", "mobilenet_v2.IMAGENET1K_V1", "--weights", "none")
    assert refused.returncode == 2 and "other ones" in refused.stderr
