"""Vision transformers are first-class: torchvision's ViT-B/16 and Swin-T freeze by blocks, tap a block's
tokens or positions, fine-tune and export checked; the same unit_modules contract works for Keras."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tlzoo.backbone import get_backbone
from tlzoo.errors import UsageError
from tlzoo.registry import get_registry
from tlzoo.runs.runfiles import METRICS

from .conftest import run_tlzoo
from .datagen import write_folder

VIT_BLOCKS = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
SWIN_UNITS = ["features.0", "features.1.0", "features.1.1", "features.2", "features.3.0", "features.3.1", "features.4",
              *[f"features.5.{i}" for i in range(6)], "features.6", "features.7.0", "features.7.1", "norm"]  # fmt: skip


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3)).astype("uint8")


def test_specs_name_blocks_as_units_without_importing_torch():
    vit = get_registry().resolve("vit_b_16")
    assert [u.name for u in vit.units] == ["conv_proj", *VIT_BLOCKS, "encoder.ln"]
    assert {u.kind for u in vit.units[1:13]} == {"EncoderBlock"}
    assert sum(u.params for u in vit.units) == vit.num_params == 85_798_656
    assert (vit.feature_dim, vit.input_multiple, [w.tag for w in vit.weights]) == (768, 16, ["IMAGENET1K_V1"])
    swin = get_registry().resolve("swin_t")
    assert [u.name for u in swin.units] == SWIN_UNITS
    assert [u.kind for u in swin.units].count("SwinTransformerBlock") == 12
    assert (swin.tap_layout, swin.feature_dim, swin.num_params) == ("channels_last", 768, 27_519_354)


def test_vit_freezes_whole_blocks_with_its_embeddings_in_the_first_unit():
    backbone = get_backbone("vit_b_16", input_size=32, seed=0)
    assert [u.name for u in backbone.units] == ["conv_proj", *VIT_BLOCKS, "encoder.ln"]
    model = backbone.model.model
    frozen = backbone.freeze("encoder.layers.encoder_layer_5")  # by name: the embedding and blocks 0-5
    assert frozen == 7
    assert not model.class_token.requires_grad and not model.encoder.pos_embedding.requires_grad
    for i, block in enumerate(model.encoder.layers):
        assert all(p.requires_grad == (i >= 6) for p in block.parameters()), i
    assert all(p.requires_grad for p in model.encoder.ln.parameters())
    after = sum(p.numel() for p in model.encoder.layers[6:].parameters()) + 1536
    assert backbone.trainable_params == after == 6 * 7_087_872 + 1536
    backbone.freeze("-1")  # all but the final norm
    assert backbone.trainable_params == 1536


def test_vit_tap_pools_a_blocks_tokens():
    backbone = get_backbone("vit_b_16", input_size=32, seed=0)
    images = _images(2, 32)
    features = backbone.extract_features(images, tap=backbone.resolve_tap("encoder.layers.encoder_layer_3"))
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(backbone.model.model, {"encoder.layers.encoder_layer_3": "x"})
    with torch.no_grad():
        tokens = extractor(torch.from_numpy(backbone.preprocess(images)).permute(0, 3, 1, 2))["x"]
    assert tokens.shape == (2, 5, 768)  # the class token and 2x2 patches
    np.testing.assert_allclose(features, tokens.mean(dim=1).numpy(), rtol=1e-5, atol=1e-5)


def test_swin_tap_pools_positions_not_channels():
    backbone = get_backbone("swin_t", input_size=64, seed=0)
    assert [u.name for u in backbone.units] == SWIN_UNITS
    images = _images(2, 64)
    tap = backbone.resolve_tap("5")  # features.3.0, the first block of stage 2: (N, 8, 8, 192) at 64 px
    features = backbone.extract_features(images, tap=tap)
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(backbone.model.model, {"features.3.0": "x"})
    with torch.no_grad():
        out = extractor(torch.from_numpy(backbone.preprocess(images)).permute(0, 3, 1, 2))["x"]
    assert out.shape == (2, 8, 8, 192) and features.shape == (2, 192)
    np.testing.assert_allclose(features, out.mean(dim=(1, 2)).numpy(), rtol=1e-5, atol=1e-5)
    assert backbone.freeze(4) == 4 and backbone.trainable_params == sum(u.params for u in backbone.units[4:])


def test_vit_sizes_must_be_a_multiple_of_its_patch():
    with pytest.raises(UsageError, match="image size 40 does not fit torch/vit_b_16: its image sizes are multiples "
                                         "of 16 \\(its patch size\\); use 32 or 48"):  # fmt: skip
        get_backbone("vit_b_16", input_size=40)


def test_vit_weights_load_at_another_size_with_interpolated_position_embeddings(tmp_path):
    import torchvision

    torch.manual_seed(3)
    source = torchvision.models.vit_b_16()  # at 224 and with its ImageNet head, as torchvision's file is
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    small = get_backbone("vit_b_16", pretrained=str(path), input_size=48).model.model
    assert small.encoder.pos_embedding.shape == (1, 10, 768)  # class token + 3x3 patches
    torch.testing.assert_close(small.class_token, source.class_token)
    torch.testing.assert_close(small.encoder.pos_embedding[:, 0], source.encoder.pos_embedding[:, 0])
    torch.testing.assert_close(small.encoder.layers[11].mlp[0].weight, source.encoder.layers[11].mlp[0].weight)


def test_keras_unit_modules_make_blocks_and_tap_a_blocks_output():
    """The same contract in Keras: a matched layer starts a unit that the following layers join."""
    spec = dataclasses.replace(get_registry().resolve("keras/vgg16"), unit_modules=("block*_conv1",))
    from tlzoo.backbone import build

    backbone = build(spec, None, (32, 32), seed=0)
    assert [u.name for u in backbone.units] == [f"block{i}_conv1" for i in range(1, 6)]
    assert sum(u.params for u in backbone.units) == backbone.num_params
    assert backbone.freeze(2) == 2
    frozen = {layer.name for layer in backbone.model.layers if layer.weights and not layer.trainable}
    assert frozen == {"block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"}
    features = backbone.extract_features(_images(2, 32), tap=1)  # block 2 ends at block2_pool: 128 channels
    assert features.shape == (2, 128)


@pytest.mark.tlzoo_slow
def test_vit_fine_tune_by_block_and_swin_tap_export_checked(tmp_path):
    data = write_folder(tmp_path / "data", per_class=6, size=32)
    common = ["--data", str(data), "--weights", "none", "--epochs", "1", "--batch-size", "8", "--out-dir",
              str(tmp_path / "runs"), "--json"]  # fmt: skip
    vit = run_tlzoo("train", "-b", "vit_b_16", "--image-size", "32", "--freeze", "encoder.layers.encoder_layer_9",
                    *common)  # fmt: skip
    assert vit.returncode == 0, vit.stderr[-2000:]
    summary = json.loads(vit.stdout)
    assert (summary["frozen_units"], summary["units"]) == (11, 14)
    metrics = json.loads((tmp_path / "runs" / "vit_b_16-fine-tune" / METRICS).read_text())
    assert metrics["trainable_params"] == 2 * 7_087_872 + 1536 + 768 * 3 + 3  # blocks 10-11, the norm, the head
    swin = run_tlzoo("train", "-b", "swin_t", "--image-size", "64", "--tap", "features.5.2", *common)
    assert swin.returncode == 0, swin.stderr[-2000:]
    for run in ("vit_b_16-fine-tune", "swin_t-feature-extract"):
        export = run_tlzoo("export", "onnx", str(tmp_path / "runs" / run), "--json")
        assert export.returncode == 0, export.stderr[-2000:]
        report = json.loads(export.stdout)
        assert report["check"] == "passed" and report["max_abs_diff"] < 1e-4 and report["top1_agreement"] == 1.0
