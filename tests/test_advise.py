"""tlzoo advise: the decision rules on known evidence, and the command end to end on tiny data."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from tlzoo.advice import Evidence, Probe, _taps, decide, probe_accuracy, summarize
from tlzoo.errors import UsageError

from .conftest import run_tlzoo
from .datagen import write_folder


def _dataset(per_class: int, classes: int = 10) -> dict:
    return summarize([f"c{i}" for i in range(classes) for _ in range(per_class)])


def _evidence(final: float, *, earlier: float | None = None, random: float | None = 0.5, half: float | None = None,
              units: int = 52) -> Evidence:  # fmt: skip
    probes = [Probe("features.5.conv.0.0", 13, 0.25, earlier if earlier is not None else final - 0.1, 0.01),
              Probe("final", None, 1.0, final, 0.01)]  # fmt: skip
    return Evidence("torch/mobilenet_v2", "IMAGENET1K_V1", 96, units, probes, random,
                    final if half is None else half, 40, 1.0)  # fmt: skip


@pytest.mark.parametrize(
    ("per_class", "evidence", "strategy", "params", "placement"),
    [
        # the frozen features are nearly perfect: nothing for fine-tuning to gain
        (180, _evidence(0.99, random=0.6), "feature-extract", {}, ("small", "similar")),
        # few images per class: features, from an earlier depth when it separates the classes better
        (12, _evidence(0.80, earlier=0.88), "feature-extract", {"tap": "13"}, ("small", "different")),
        (12, _evidence(0.90), "feature-extract", {}, ("small", "similar")),
        # small and similar with room: fine-tune the later half
        (180, _evidence(0.92, random=0.6), "fine-tune", {"freeze": "26"}, ("small", "similar")),
        # under 100 per class, training the backbone for a few epochs overfits: the features
        (60, _evidence(0.86, random=0.6), "feature-extract", {}, ("small", "similar")),
        # pretraining does not help (random weights do as well), but small data: still only the later half
        (180, _evidence(0.90, random=0.92), "fine-tune", {"freeze": "26"}, ("small", "different")),
        # large, and pretrained features worse than random ones: from scratch
        (1500, _evidence(0.80, random=0.85), "scratch", {}, ("large", "different")),
        # large and similar: the later half; large and different: every unit
        (1500, _evidence(0.93, random=0.6), "fine-tune", {"freeze": "26"}, ("large", "similar")),
        (1500, _evidence(0.80, earlier=0.86, random=0.7), "fine-tune", {"freeze": "0"}, ("large", "different")),
    ],
)
def test_decision_rules(per_class, evidence, strategy, params, placement):
    got_strategy, got_params, backbone, size, similarity, reasons, alternatives = decide(_dataset(per_class), [evidence])
    assert (got_strategy, got_params, (size, similarity)) == (strategy, params, placement)
    assert backbone == "torch/mobilenet_v2" and reasons and alternatives
    assert f"{evidence.final.accuracy:.1%}" in " ".join(reasons)


def test_the_backbone_whose_features_separate_the_classes_best_is_chosen():
    weak = _evidence(0.80)
    strong = Evidence("torch/resnet50", "IMAGENET1K_V2", 96, 53, [Probe("final", None, 1.0, 0.95, 0.01)], 0.5, 0.94, 40, 1.0)
    assert decide(_dataset(180), [weak, strong])[2] == "torch/resnet50"


def test_taps_are_spread_over_the_depth_and_end_with_the_final_features():
    assert _taps(52) == [12, 25, 38, None]
    assert _taps(14) == [3, 6, 9, None]
    assert _taps(3) == [None]


def test_the_probe_is_cross_validated_and_sees_separable_features():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    separable = rng.normal(size=(30, 8)) + y[:, None] * 5.0
    noise = rng.normal(size=(30, 8))
    assert probe_accuracy(separable, y, 0)[0] == 1.0
    assert probe_accuracy(noise, y, 0)[0] < 0.7
    with pytest.raises(UsageError, match="at least 2 images"):
        probe_accuracy(noise[:4], np.array([0, 0, 1, 2]), 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny-advise") / "data", per_class=8)


def test_advise_json_gives_strategy_spec_command_and_evidence(tiny, tmp_path):
    result = run_tlzoo("advise", "--data", str(tiny), "--backbones", "resnet18", "--weights", "none", "--image-size",
                       "32", "--budget", "1", "--json", env={"TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    advice = json.loads(result.stdout)
    assert advice["strategy"] in ("feature-extract", "fine-tune", "two-stage", "scratch")
    assert advice["strategy_spec"].startswith(advice["strategy"])
    assert advice["dataset"]["classes"] == 3 and advice["dataset"]["per_class"] == {"blue": 8, "green": 8, "red": 8}
    [evidence] = advice["evidence"]
    assert evidence["backbone"] == "torch/resnet18" and evidence["units"] == 20 and evidence["weights"] == "random init"
    assert [p["unit"] for p in evidence["probes"]] == [5, 10, 15, None]
    assert all(0 <= p["accuracy"] <= 1 for p in evidence["probes"]) and evidence["random_accuracy"] is None
    command = shlex.split(advice["command"])
    assert command[:2] == ["tlzoo", "train"] and command[command.index("--backbone") + 1] == "torch/resnet18"
    assert command[command.index("--weights") + 1] == "none" and "--image-size" in command
    # the printed command is a valid tlzoo train command: every option it names is train's
    from tlzoo.training.config import TrainConfig

    options = dict(zip(command[2::2], command[3::2]))
    settings = {k.lstrip("-").replace("-", "_"): v for k, v in options.items()}
    TrainConfig(**settings).checked(set(settings))


def test_advise_refuses_bad_input_in_one_line(tiny, tmp_path):
    one = tmp_path / "one"
    write_folder(one, per_class=1)
    for args, words in (
        (["--data", str(one)], "have a single image; every class needs at least 2"),
        (["--data", str(tiny), "--budget", "0"], "--budget must be a positive number of minutes"),
        (["--data", str(tiny), "--backbones", "resnet5"], "resnet5"),
        (["--data", str(tiny), "--image-size", "0"], "--image-size must be in [1, 2048]"),
    ):
        result = run_tlzoo("advise", *args, "--weights", "none")
        assert result.returncode != 0 and words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_advise_verify_trains_the_advice_and_its_alternatives(tiny, tmp_path):
    result = run_tlzoo("advise", "--data", str(tiny), "--backbones", "resnet18", "--weights", "none", "--image-size",
                       "32", "--budget", "1", "--verify", "--verify-epochs", "1", "--out", str(tmp_path / "verify"),
                       "--json", env={"TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    advice = json.loads(result.stdout)
    verify = advice["verify"]
    trained = [r["strategy"] for r in verify["rows"]]
    assert trained[0] == advice["strategy_spec"] or advice["strategy_spec"] in trained
    assert set(advice["alternatives"]) <= set(trained)
    assert verify["gap_points"] == round((verify["best_accuracy"] - verify["advised_accuracy"]) * 100, 2)
    assert verify["held"] == (verify["gap_points"] <= 1.5)
    assert (tmp_path / "verify" / "leaderboard.json").is_file()


def test_the_python_api_gives_the_same_advice_as_the_command(tiny, tmp_path, monkeypatch):
    import tlzoo

    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    advice = tlzoo.advise(tiny, "resnet18", budget_minutes=1, weights="none", image_size=32, verbose=False)
    record = advice.to_dict()
    assert record["strategy_spec"] == advice.strategy_spec and advice.strategy_spec.startswith(advice.strategy)
    assert record["dataset"]["per_class"] == {"blue": 8, "green": 8, "red": 8}
    [evidence] = advice.evidence
    assert evidence.backbone == "torch/resnet18" and evidence.weights == "random init"
    command = shlex.split(advice.command)
    assert command[command.index("--weights") + 1] == "none" and command[command.index("--image-size") + 1] == "32"
    cli = run_tlzoo("advise", "--data", str(tiny), "--backbones", "resnet18", "--weights", "none", "--image-size",
                    "32", "--budget", "1", "--json", env={"TLZOO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert json.loads(cli.stdout)["strategy_spec"] == advice.strategy_spec
    with pytest.raises(UsageError, match="unknown advise option\\(s\\) epochs; its data options are: image_size"):
        tlzoo.advise(tiny, "resnet18", epochs=3)
    with pytest.raises(UsageError, match="--test-split"):
        tlzoo.advise(tiny, "resnet18", test_split=1.5)
