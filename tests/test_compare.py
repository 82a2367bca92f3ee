"""tlzoo compare: two backbones (one per framework) x three strategies on tiny data, every report format."""

from __future__ import annotations

import json

import pytest

from tlzoo.comparison import parse_strategies, plan
from tlzoo.errors import FreezeSpecError, UnknownBackboneError, UsageError

from .conftest import run_tlzoo
from .datagen import write_folder


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny-compare") / "data", per_class=8)


def test_strategy_strings_and_sweeps():
    assert parse_strategies("feature-extract,fine-tune:freeze=8,two-stage,scratch") == [
        ("feature-extract", {}), ("fine-tune", {"freeze": "8"}), ("two-stage", {}), ("scratch", {}),
    ]  # fmt: skip
    assert parse_strategies("fine-tune:freeze=0,4,8,12,all") == [
        ("fine-tune", {"freeze": v}) for v in ("0", "4", "8", "12", "all")
    ]
    assert parse_strategies("feature-extract:head=mlp:tap=5,scratch") == [
        ("feature-extract", {"head": "mlp", "tap": "5"}), ("scratch", {}),
    ]  # fmt: skip
    # a comma sweeps; "+" joins the values of one list setting into one run
    assert parse_strategies("fine-tune:augment=flip,crop") == [("fine-tune", {"augment": "flip"}), ("fine-tune", {"augment": "crop"})]
    assert parse_strategies("fine-tune:augment=flip+crop") == [("fine-tune", {"augment": "flip+crop"})]
    from tlzoo.training.config import TrainConfig

    assert TrainConfig(strategy="fine-tune", augment="flip+crop").augment_list() == ["flip", "crop"]
    assert TrainConfig(strategy="fine-tune", augment="crop").augment_list() == ["crop"]


def test_bad_lists_fail_before_any_training(tiny_data):
    with pytest.raises(UsageError, match="unknown strategy 'finetune'. Did you mean 'fine-tune'"):
        parse_strategies("feature-extract,finetune")
    with pytest.raises(UsageError, match="unknown strategy parameter 'frezee'"):
        parse_strategies("fine-tune:frezee=8")
    with pytest.raises(UsageError, match="must look like key=value"):
        parse_strategies("fine-tune:freeze")
    with pytest.raises(UnknownBackboneError):
        plan(tiny_data, ["resnet18", "resnet5"], "feature-extract", None)
    with pytest.raises(FreezeSpecError, match="torch/resnet18 fine-tune: --freeze 40 is out of range: this backbone has 20"):
        plan(tiny_data, ["resnet18"], "fine-tune:freeze=8,40", None)
    with pytest.raises(UsageError, match="torch/resnet18 scratch: --lr must be positive"):
        plan(tiny_data, ["resnet18"], "scratch:lr=nan", None)
    with pytest.raises(UsageError, match="torch/resnet18 feature-extract: --freeze does not fit --strategy feature-extract"):
        plan(tiny_data, ["resnet18"], "feature-extract:freeze=8", None)
    with pytest.raises(UsageError, match="--unfreeze does not fit --strategy fine-tune"):
        plan(tiny_data, ["resnet18"], "fine-tune:unfreeze=3", None)
    with pytest.raises(UsageError, match="--feature-engine 'onnxruntim' is not installed. Did you mean 'onnxruntime'"):
        plan(tiny_data, ["resnet18"], "feature-extract:feature_engine=auto,onnxruntim", None)
    with pytest.raises(UsageError, match="--budget 0.001 minutes is too small for even one combination"):
        plan(tiny_data, ["resnet18"], "feature-extract", 0.001)


def test_compare_two_backbones_three_strategies_every_format(tiny_data, tmp_path):
    out = tmp_path / "cmp"
    result = run_tlzoo(
        "compare", "--data", str(tiny_data), "--backbones", "resnet18,keras/vgg16,keras/mobilenet_v2",
        "--strategies", "feature-extract,fine-tune:freeze=8,fine-tune:freeze=60", "--image-size", "32",
        "--epochs", "1", "--batch-size", "8", "--weights", "none", "--out", str(out), "--json",
        env={"TLZOO_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    # resnet18 has 20 units: --freeze 60 is refused before anything trains.
    message = "torch/resnet18 fine-tune: --freeze 60 is out of range: this backbone has 20 units"
    assert result.returncode == 2 and message in " ".join(result.stderr.split())
    assert not out.exists()

    result = run_tlzoo(
        "compare", "--data", str(tiny_data), "--backbones", "resnet18,keras/vgg16",
        "--strategies", "feature-extract,fine-tune:freeze=8,scratch:lr=1e30", "--image-size", "32",
        "--epochs", "1", "--batch-size", "8", "--weights", "none", "--out", str(out), "--json",
        env={"TLZOO_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    board = json.loads(result.stdout)
    assert len(board) == 6
    by = {(r["backbone"], r["strategy"]): r for r in board}
    for backbone in ("torch/resnet18", "keras/vgg16"):
        for strategy in ("feature-extract", "fine-tune:freeze=8"):
            row = by[(backbone, strategy)]
            assert row["status"] == "ok", row
            assert 0 <= row["accuracy"] <= 1 and row["train_s"] > 0 and row["trainable_params"] > 0
            assert row["onnx_latency_ms"] > 0 and row["peak_memory_mb"] > 0
        failed = by[(backbone, "scratch:lr=1e30")]  # fails only once it trains: the loss overflows
        assert failed["status"] == "failed" and "training diverged" in failed["error"], failed
    # Every image is decoded once per decode recipe: by the first combination of each backbone (feature
    # extraction fills the decoded-pixel store), never by the ones after it.
    n_images = sum(1 for f in tiny_data.rglob("*") if f.is_file())
    for backbone in ("torch/resnet18", "keras/vgg16"):
        assert by[(backbone, "feature-extract")]["images_decoded"] == n_images
        assert by[(backbone, "fine-tune:freeze=8")]["images_decoded"] == 0
    # The failing combination is recorded; the ranked leaderboard puts the successes first.
    assert [r["status"] for r in board] == ["ok"] * 4 + ["failed"] * 2
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved == board
    markdown = (out / "leaderboard.md").read_text()
    assert markdown.startswith("| backbone | strategy | status | test acc |")
    assert "scratch:lr=1e30: failed" in markdown
    for png in ("accuracy_vs_time.png", "accuracy_by_strategy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Each combination is a normal run directory: the winner exports directly.
    assert (out / "runs" / "torch-resnet18-feature-extract" / "model.pt").is_file()
