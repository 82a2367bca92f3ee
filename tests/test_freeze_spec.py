from __future__ import annotations

import pytest

from tlzoo.errors import FreezeSpecError
from tlzoo.freeze import parse_freeze, parse_unit
from tlzoo.registry import get_registry

NAMES = [f"conv{i}" for i in range(1, 14)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("none", 0), ("0", 0), (8, 8), ("8", 8), ("13", 13), ("all", 13), ("ALL", 13),
     ("-1", 12), ("-13", 0), ("conv8", 8), ("conv1", 1)],
)  # fmt: skip
def test_freeze_values(value, expected):
    assert parse_freeze(value, NAMES) == expected


def test_out_of_range_names_the_valid_range():
    with pytest.raises(FreezeSpecError, match=r"out of range: this backbone has 13 units, so use 0\.\.13, -1\.\.-13"):
        parse_freeze("14", NAMES)
    with pytest.raises(FreezeSpecError, match=r"use -1\.\.-13"):
        parse_freeze("-14", NAMES)


def test_unknown_unit_name_suggests():
    with pytest.raises(FreezeSpecError, match=r"no unit of that name\. Did you mean: conv8"):
        parse_freeze("conv88", NAMES)


def test_tap_units():
    assert parse_unit("1", NAMES) == 0
    assert parse_unit("-1", NAMES) == 12
    assert parse_unit("conv5", NAMES) == 4
    with pytest.raises(FreezeSpecError, match=r"--tap 0 is out of range: use 1\.\.13"):
        parse_unit("0", NAMES)


def test_vgg16_freeze_8_names_the_same_eight_convolutions_in_both_frameworks():
    reg = get_registry()
    torch_units = reg.resolve("torch/vgg16").units
    keras_units = reg.resolve("keras/vgg16").units
    assert len(torch_units) == len(keras_units) == 13
    assert all(u.kind == "Conv2d" for u in torch_units) and all(u.kind == "Conv2D" for u in keras_units)
    # Same layers, same parameter counts, in the same order: unit 8 is conv4_1 in both.
    assert [u.params for u in torch_units] == [u.params for u in keras_units]
    assert keras_units[7].name == "block4_conv1"
    assert torch_units[7].name == "features.17"
