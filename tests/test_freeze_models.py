"""--freeze on built models: the same units in both frameworks, frozen norms stay in inference mode."""

from __future__ import annotations

import numpy as np
import pytest

from tlzoo.backbone import get_backbone


def test_torch_vgg16_freeze_8_freezes_exactly_the_first_8_convolutions():
    backbone = get_backbone("torch/vgg16", input_size=32)
    assert backbone.freeze(8) == 8
    frozen = sorted({n.rsplit(".", 1)[0] for n, p in backbone.model.model.named_parameters() if not p.requires_grad})
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 17]
    assert frozen == sorted(f"features.{i}" for i in conv_indices)
    assert backbone.trainable_params == sum(u.params for u in backbone.units[8:])


def test_keras_vgg16_freeze_8_freezes_exactly_the_first_8_convolutions():
    backbone = get_backbone("keras/vgg16", input_size=32)
    assert backbone.freeze("8") == 8
    frozen = [layer.name for layer in backbone.model.layers if layer.weights and not layer.trainable]
    assert frozen == ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
                      "block3_conv1", "block3_conv2", "block3_conv3", "block4_conv1"]  # fmt: skip
    assert backbone.trainable_params == sum(u.params for u in backbone.units[8:])


@pytest.mark.parametrize("backbone_id", ["torch/vgg16", "keras/vgg16"])
def test_freeze_by_name_negative_and_all(backbone_id):
    backbone = get_backbone(backbone_id, input_size=32)
    names = backbone.unit_names()
    assert backbone.freeze(names[4]) == 5
    assert backbone.freeze("-3") == 10
    assert backbone.trainable_params == sum(u.params for u in backbone.units[10:])
    assert backbone.freeze("all") == 13 and backbone.trainable_params == 0
    assert backbone.freeze(0) == 0 and backbone.trainable_params == backbone.num_params


def test_torch_frozen_batchnorm_stays_in_eval_mode_when_training():
    backbone = get_backbone("torch/resnet18", input_size=32)
    backbone.freeze(3)
    backbone.model.train()
    units = backbone._units
    frozen_norms = [m for u in units[:3] for m in u.norms]
    live_norms = [m for u in units[3:] for m in u.norms]
    assert frozen_norms and all(not m.training for m in frozen_norms)
    assert all(m.training for m in live_norms)
    import torch

    before = frozen_norms[0].running_mean.clone()
    backbone.model(torch.randn(4, 3, 32, 32))
    assert torch.equal(frozen_norms[0].running_mean, before)
    assert not torch.equal(live_norms[0].running_mean, torch.zeros_like(live_norms[0].running_mean))


def test_keras_frozen_batchnorm_runs_in_inference_mode():
    import keras

    backbone = get_backbone("keras/resnet50", input_size=32)
    backbone.freeze(1)
    bn = backbone.model.get_layer("conv1_bn")
    assert bn.trainable is False
    before = keras.ops.convert_to_numpy(bn.moving_mean)
    backbone.model(np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32"), training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), before)
    live = backbone.model.get_layer("conv2_block1_1_bn")
    assert not np.array_equal(keras.ops.convert_to_numpy(live.moving_mean), np.zeros(live.moving_mean.shape))
    keras.backend.clear_session()


@pytest.mark.parametrize("backbone_id", ["torch/resnet18", "keras/vgg16"])
def test_tap_gives_the_pooled_output_of_an_earlier_unit(backbone_id):
    backbone = get_backbone(backbone_id, input_size=32)
    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3)).astype("uint8")
    tap = backbone.resolve_tap("2")
    features = backbone.extract_features(images, tap=tap)
    expected_channels = 64
    assert features.shape == (3, expected_channels)
    assert not np.allclose(features, backbone.extract_features(images)[:, :expected_channels])


def test_every_unit_of_a_torch_mobilenet_can_be_tapped():
    """torch.fx keeps Conv2dNormActivation whole: a unit inside one is tapped at that block's output."""
    backbone = get_backbone("torch/mobilenet_v2", input_size=32)
    images = np.zeros((1, 32, 32, 3), np.uint8)
    widths = [backbone.extract_features(images, tap=i).shape[1] for i in range(len(backbone.units))]
    assert widths[4] == 96 and widths[12] == 192 and widths[-1] == 1280  # features.2.conv.1, features.5.conv.0
