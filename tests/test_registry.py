from __future__ import annotations

import pytest

import tlzoo
from tlzoo.errors import UnknownBackboneError, UsageError
from tlzoo.registry import get_registry

TORCH_NAMES = {"vgg16", "vgg19", "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large",
               "efficientnet_b0", "inception_v3", "densenet121", "convnext_tiny", "vit_b_16", "swin_t"}  # fmt: skip
KERAS_NAMES = {"vgg16", "vgg19", "resnet50", "mobilenet_v2", "inception_v3", "efficientnet_b0",
               "densenet121", "xception"}  # fmt: skip


def test_builtin_backbones_over_both_frameworks():
    specs = tlzoo.list_backbones()
    assert {s.name for s in specs if s.framework == "torch"} == TORCH_NAMES
    assert {s.name for s in specs if s.framework == "keras"} == KERAS_NAMES
    assert len([s for s in specs if s.framework in ("torch", "keras")]) == 20
    assert len([s for s in specs if s.framework == "timm"]) == 1151  # the timm plugin (tests/test_timm.py)


def test_timm_backbones_never_take_torchvisions_short_names():
    reg = get_registry()
    for name in ("vgg16", "resnet50", "densenet121", "convnext_tiny", "efficientnet_b0", "inception_v3"):
        assert reg.resolve(f"timm/{name}").framework == "timm"
        assert reg.resolve(name).framework == "torch", name
    assert reg.resolve("xception").id == "keras/xception" and reg.resolve("timm/xception65").framework == "timm"
    assert reg.resolve("vit_small_patch14_dinov2").id == "timm/vit_small_patch14_dinov2"  # unique: its own short name


def test_filters_like_list_models():
    assert [s.id for s in tlzoo.list_backbones(pattern="vgg*")] == [
        "timm/vgg11", "timm/vgg11_bn", "timm/vgg13", "timm/vgg13_bn",
        "torch/vgg16", "keras/vgg16", "timm/vgg16", "timm/vgg16_bn", "torch/vgg19", "keras/vgg19", "timm/vgg19", "timm/vgg19_bn"
    ]  # fmt: skip
    assert [s.id for s in tlzoo.list_backbones(framework="keras", pattern="*net*")] == [
        "keras/densenet121", "keras/efficientnet_b0", "keras/mobilenet_v2", "keras/resnet50"
    ]
    assert [s.id for s in tlzoo.list_backbones(pattern="keras/x*")] == ["keras/xception"]


def test_short_name_defaults_to_torch_and_ids_are_exact():
    reg = get_registry()
    assert reg.resolve("vgg16").id == "torch/vgg16"
    assert reg.resolve("vgg16", framework="keras").id == "keras/vgg16"
    assert reg.resolve("keras/vgg16").id == "keras/vgg16"
    assert reg.resolve("xception").id == "keras/xception"  # only Keras has it


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(UnknownBackboneError) as info:
        get_registry().resolve("vgg61")
    assert info.value.exit_code == 2
    assert "Did you mean: vgg16" in str(info.value) or "vgg16" in info.value.suggestions
    assert set(info.value.suggestions) >= {"vgg16", "vgg19"}


def test_framework_mismatch_and_unknown_framework():
    with pytest.raises(UsageError, match="keras backbone but --framework is torch"):
        get_registry().resolve("keras/vgg16", framework="torch")
    with pytest.raises(UsageError, match="unknown framework 'jax'"):
        get_registry().resolve("vgg16", framework="jax")
    with pytest.raises(UnknownBackboneError):
        get_registry().resolve("convnext_tiny", framework="keras")


def test_same_architecture_same_shape_in_both_frameworks():
    reg = get_registry()
    for name in TORCH_NAMES & KERAS_NAMES:
        t, k = reg.resolve(name, "torch"), reg.resolve(name, "keras")
        assert t.feature_dim == k.feature_dim, name
        assert len(t.units) == len(k.units), name
        assert t.input_size == k.input_size, name


def test_specs_are_plain_data_round_trip():
    for spec in tlzoo.list_backbones():
        assert tlzoo.BackboneSpec.from_dict(spec.to_dict()) == spec


def test_a_resize_method_tlzoo_does_not_use_is_refused_not_ignored():
    from tlzoo.specs import TORCHVISION_IMAGENET, Preprocessing

    data = {**TORCHVISION_IMAGENET.to_dict(), "interpolation": "lanczos"}
    with pytest.raises(ValueError, match="preprocessing interpolation 'lanczos' is not supported: use bilinear or bicubic"):
        Preprocessing.from_dict(data)
    with pytest.raises(ValueError, match="resize policy 'letterbox' is not one of squash, crop, pad"):
        Preprocessing.from_dict({**data, "interpolation": "bicubic", "resize": "letterbox"})
    with pytest.raises(ValueError, match="crop_fraction must be in"):
        Preprocessing.from_dict({**data, "interpolation": "bicubic", "crop_fraction": 1.5})
    assert Preprocessing.from_dict({**data, "interpolation": "bilinear"}) == TORCHVISION_IMAGENET


def test_a_description_written_before_the_resize_fields_means_squash_and_bilinear():
    from tlzoo.specs import Preprocessing

    old = {"mode": "torch", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channel_order": "RGB",
           "value_range": 1.0}
    prep = Preprocessing.from_dict(old)
    assert (prep.resize, prep.crop_fraction, prep.interpolation) == ("squash", 1.0, "bilinear")


def test_torchvision_tags_carry_their_documented_evaluation_transform():
    spec = get_registry().resolve("torch/mobilenet_v2")
    v1, v2 = spec.weights_by_tag("IMAGENET1K_V1"), spec.weights_by_tag("IMAGENET1K_V2")
    assert spec.preprocessing_for(v1).resize_text() == "crop 0.875 bilinear"  # Resize(256), CenterCrop(224)
    assert spec.preprocessing_for(v2).crop_fraction == pytest.approx(224 / 232, abs=1e-6)  # Resize(232)
    assert spec.preprocessing_for(v1, "pad").resize == "pad"
    effnet = get_registry().resolve("torch/efficientnet_b0")
    assert effnet.preprocessing_for(effnet.default_weights).resize_text() == "crop 0.875 bicubic"
    swin = get_registry().resolve("torch/swin_t")
    assert swin.preprocessing_for(swin.default_weights).interpolation == "bicubic"
    keras = get_registry().resolve("keras/mobilenet_v2")
    assert keras.preprocessing_for(keras.default_weights).resize == "squash"  # keras.applications: no crop
