"""Each training setting is declared once (a TrainConfig field) and everything else is generated from it:
train's options, config-file checks, compare's shared options and its strategy parameters."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from tlzoo.cli.app import app
from tlzoo.comparison import PARAMS, common_args, parse_strategies, run_combination, shared_settings
from tlzoo.errors import UsageError
from tlzoo.settings import Setting
from tlzoo.training.config import TRAIN_SETTINGS, TrainConfig

from .datagen import write_folder

TRAIN_OWN = {"nproc", "no_augment", "exist_ok", "config", "resume", "quiet", "json"}  # not settings: how to run


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("tiny-settings") / "data", per_class=4)


def _command(name: str):  # noqa: ANN202
    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined]


def test_every_trainconfig_field_is_one_setting_and_one_train_option():
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert [s.name for s in TRAIN_SETTINGS] == fields
    options = {p.name: p for p in _command("train").params}
    assert set(options) == set(fields) | TRAIN_OWN
    for s in TRAIN_SETTINGS:
        option = options[s.name]
        assert s.option in option.opts + option.secondary_opts, s.name
        assert option.help == s.help and s.help
        expected = s.cli_text(s.default) if s.type == "ints" else s.default
        assert option.default == expected, s.name
    # the declarations say what the old hand-written tables said
    by_name = {s.name: s for s in TRAIN_SETTINGS}
    assert by_name["c"].option == "--C" and by_name["backbone"].short == "-b"
    assert by_name["hidden"].type == "ints" and by_name["hidden"].default == [256]
    assert by_name["framework"].nullable and not by_name["epochs"].nullable
    assert by_name["strategy"].choices == ("feature-extract", "fine-tune", "two-stage", "scratch")


def test_settings_that_the_cli_never_had_are_now_options(tmp_path):
    """momentum, weight decay and nesterov were config-file-only; generated options reach TrainConfig."""
    names = {p.name for p in _command("train").params}
    assert {"momentum", "weight_decay", "nesterov"} <= names
    cfg, notes = TrainConfig(strategy="fine-tune", momentum="0.5", weight_decay="0", nesterov="false").checked(
        {"strategy", "momentum", "weight_decay", "nesterov"}
    )
    assert (cfg.momentum, cfg.weight_decay, cfg.nesterov) == (0.5, 0.0, False)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "--epochs must be at least 1, got 0"),
        ({"epochs": 2.5}, "--epochs must be a whole number, got 2.5"),
        ({"epochs": None}, "--epochs needs a value, got none"),
        ({"lr": float("inf")}, "--lr must be positive and finite, got inf"),
        ({"momentum": 1.0}, "--momentum must be in [0, 1), got 1.0"),
        ({"weight_decay": -1}, "--weight-decay must be 0 or more, got -1"),
        ({"hidden": "64,x"}, "--hidden must list whole numbers at least 1, comma separated, got '64,x'"),
        ({"schedule": "cosin"}, "--schedule 'cosin' is not known. Did you mean 'cosine'?"),
        ({"name": ["a"]}, "--name must be text, got ['a']"),
        ({"nesterov": "maybe"}, "--nesterov must be true or false, got 'maybe'"),
    ],
)
def test_values_are_checked_by_their_declaration(settings, message):
    with pytest.raises(UsageError) as info:
        TrainConfig(**settings).validate()
    assert message in str(info.value)


def test_a_config_file_is_checked_by_the_same_declarations(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("strategy: fine-tune\nfreeze: 4\nhidden: 64\nweight_decay: -0.5\n")
    with pytest.raises(UsageError, match=r"c.yaml: weight_decay: --weight-decay must be 0 or more, got -0.5"):
        TrainConfig.load_given(path)
    path.write_text("strategy: fine-tune\nfreeze: 4\nbatch_size: '16'\n")
    cfg, given = TrainConfig.load_given(path)
    assert (cfg.freeze, cfg.batch_size) == ("4", 16)  # YAML numbers are the same setting as their text
    assert given == {"strategy", "freeze", "batch_size"}


def test_compare_strategy_parameters_are_the_per_strategy_settings():
    assert set(PARAMS) == {s.name for s in TRAIN_SETTINGS if s.per_strategy}
    assert {"freeze", "tap", "head", "dropout", "c", "optimizer", "nesterov", "weight_decay"} <= set(PARAMS)
    assert not {"data", "seed", "device", "name", "out_dir", "image_size"} & set(PARAMS)
    parsed = parse_strategies("feature-extract:head=mlp:hidden=64+32:dropout=0.5,fine-tune:nesterov=false:c=1")
    assert parsed == [("feature-extract", {"head": "mlp", "hidden": "64+32", "dropout": "0.5"}),
                      ("fine-tune", {"nesterov": "false", "c": "1"})]  # fmt: skip
    assert PARAMS["hidden"].cli_args("64+32") == ["--hidden", "64,32"]
    assert PARAMS["nesterov"].cli_args("false") == ["--no-nesterov"]
    assert PARAMS["nesterov"].cli_args("true") == ["--nesterov"]


def test_compare_refuses_a_parameter_that_does_not_fit_or_is_out_of_range(tiny_data):
    from tlzoo.comparison import plan

    with pytest.raises(UsageError, match="torch/resnet18 fine-tune: --C does not fit --strategy fine-tune"):
        plan(tiny_data, ["resnet18"], "fine-tune:c=1", None)
    with pytest.raises(UsageError, match="torch/resnet18 fine-tune: --weight-decay must be 0 or more, got -1"):
        plan(tiny_data, ["resnet18"], "fine-tune:weight_decay=-1", None)
    combos = plan(tiny_data, ["resnet18"], "feature-extract:head=mlp:dropout=0.5,fine-tune:nesterov=false", None)
    assert [c.label for c in combos] == ["feature-extract:head=mlp:dropout=0.5", "fine-tune:nesterov=false"]


def test_compare_shared_options_are_train_settings_with_compare_defaults():
    shared = {s.name: s for s in shared_settings()}
    assert shared["epochs"].default == 5 and shared["test_split"].default == 0.2
    assert shared["epochs"].min == 1  # the range comes from train's declaration
    options = {p.name for p in _command("compare").params}
    assert set(shared) <= options
    assert common_args(epochs=2, seed=3) == ["--epochs", "2", "--batch-size", "32", "--test-split", "0.2",
                                             "--augment", "auto", "--weights", "auto", "--seed", "3",
                                             "--balance", "auto", "--calibrate", "auto"]  # fmt: skip
    assert common_args(balance="weights")[-4:] == ["--balance", "weights", "--calibrate", "auto"]
    assert "--image-size" in common_args(image_size=48)
    with pytest.raises(UsageError, match="--epochs must be at least 1, got 0"):
        common_args(epochs=0)
    with pytest.raises(UsageError, match="unknown compare option"):
        common_args(freeze="4")


def test_compare_passes_per_strategy_settings_to_train(monkeypatch, tmp_path):
    seen = {}

    def fake_run(args, **kwargs):  # noqa: ANN001, ANN202
        seen["args"] = args
        raise __import__("subprocess").TimeoutExpired(args, 1)

    monkeypatch.setattr("tlzoo.comparison.subprocess.run", fake_run)
    from tlzoo.comparison import Combination

    run_combination(Combination("torch/resnet18", "fine-tune", {"nesterov": "false", "hidden": "8"}),
                    common_args(), tmp_path, timeout=1)  # fmt: skip
    assert "--no-nesterov" in seen["args"]


def test_a_setting_declaration_is_checked():
    with pytest.raises(ValueError, match="type must be one of"):
        Setting("x", "list")
    with pytest.raises(ValueError, match="must be a Python identifier"):
        Setting("not-an-identifier", "int")
