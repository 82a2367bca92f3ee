"""Regenerate backbones.json from torchvision itself (maintainers only).

    python -m tlzoo_torchvision._generate

The JSON is what `tlzoo list-backbones` and `tlzoo describe` read without
importing torch; tests/test_static_specs.py checks it against the built models.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import torchvision

from tlzoo_torch.backend import trace_units
from tlzoo.specs import TORCHVISION_IMAGENET, BackboneSpec, UnitSpec, WeightsSpec

from .build import build

OUT = Path(__file__).with_name("backbones.json")
# Full sha256 of files we hold; others carry torchvision's 8-hex-digit prefix from the file name.
FULL_SHA256 = {"mobilenet_v2-b0353104.pth": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"}


def weights_of(name: str) -> list[dict]:
    enum = torchvision.models.get_model_weights(name)
    ordered = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
    rows = []
    for w in ordered:
        metrics = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
        if not metrics or any(math.isnan(v) for v in metrics.values()):
            continue  # e.g. VGG16's IMAGENET1K_FEATURES: other preprocessing, no classifier metrics
        file_name = w.url.rsplit("/", 1)[1]
        rows.append(
            {
                "tag": w.name,
                "file_name": file_name,
                "file_hash": FULL_SHA256.get(file_name, file_name.rsplit("-", 1)[1].split(".")[0]),
                "url": w.url,
                "source": "torchvision",
                "metrics": {k: float(v) for k, v in metrics.items()},
                **evaluation_transform(w),
            }
        )
    return rows


def evaluation_transform(w: torchvision.models.WeightsEnum) -> dict:
    """The tag's documented evaluation transform (torchvision's ImageClassification: resize the short side to
    resize_size, centre-crop crop_size) as tlzoo's resize policy: crop, with crop_size / resize_size."""
    import inspect

    from torchvision.transforms._presets import ImageClassification

    defaults = {k: p.default for k, p in inspect.signature(ImageClassification).parameters.items()}
    keywords = {**defaults, **w.transforms.keywords}
    return {"resize": "crop", "crop_fraction": round(keywords["crop_size"] / keywords["resize_size"], 6),
            "interpolation": keywords["interpolation"].value}


NAMES = (
    "vgg16", "vgg19", "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large",
    "efficientnet_b0", "inception_v3", "densenet121", "convnext_tiny", "vit_b_16", "swin_t",
)  # fmt: skip
# Vision transformers: blocks are the freeze units, not their many linear layers.
UNIT_MODULES = {
    "vit_b_16": ("conv_proj", "encoder.layers.*", "encoder.ln"),  # patch embedding, 12 encoder blocks, final norm
    "swin_t": ("features.0", "features.[1357].*", "features.[246]", "norm"),  # embedding, blocks, patch merging, norm
}
TAP_LAYOUT = {"swin_t": "channels_last"}  # Swin's stages keep (N, H, W, C)
INPUT_MULTIPLE = {"vit_b_16": 16}
ONLY_WEIGHTS = {"vit_b_16": "IMAGENET1K_V1"}  # the SWAG weights take 384/518 px and other preprocessing
MIN_INPUT_SIZE = {"inception_v3": 75}
DESCRIPTIONS = {
    "vgg16": "VGG-16 (Simonyan & Zisserman 2014): 13 convolutions; the classic transfer-learning backbone",
    "vgg19": "VGG-19 (Simonyan & Zisserman 2014): 16 convolutions",
    "resnet18": "ResNet-18 (He et al. 2015): small residual network",
    "resnet50": "ResNet-50 (He et al. 2015): bottleneck residual network, the common default",
    "mobilenet_v2": "MobileNetV2 (Sandler et al. 2018): inverted residuals, fast on CPUs and phones",
    "mobilenet_v3_large": "MobileNetV3-Large (Howard et al. 2019): NAS-designed, squeeze-excite, hard-swish",
    "efficientnet_b0": "EfficientNet-B0 (Tan & Le 2019): compound-scaled MBConv network",
    "inception_v3": "Inception v3 (Szegedy et al. 2015): factorized inception modules, 299x299 input",
    "densenet121": "DenseNet-121 (Huang et al. 2016): dense connectivity, pre-activation",
    "convnext_tiny": "ConvNeXt-Tiny (Liu et al. 2022): a ConvNet modernized after vision transformers",
    "vit_b_16": "ViT-B/16 (Dosovitskiy et al. 2020): a transformer on 16x16 patches; units are its 12 blocks",
    "swin_t": "Swin-T (Liu et al. 2021): shifted-window transformer in four stages; units are its blocks",
}


def describe(name: str) -> dict:
    import torch

    size = 299 if name == "inception_v3" else 224
    draft = BackboneSpec(
        name=name, framework="torch", builder="tlzoo_torchvision.build:build", input_size=(size, size),
        feature_dim=0, num_params=0, preprocessing=TORCHVISION_IMAGENET,
    )  # fmt: skip
    model = build(spec=draft, weights=None, input_size=(size, size)).eval()
    with torch.no_grad():
        dim = model(torch.zeros(1, 3, size, size)).shape[1]
    units = trace_units(model, (size, size), UNIT_MODULES.get(name, ()))
    weights = tuple(WeightsSpec(**w) for w in weights_of(name) if w["tag"] == ONLY_WEIGHTS.get(name, w["tag"]))
    spec = dataclasses.replace(
        draft,
        # Without a tag (scratch, a file of the user's own) the backbone keeps its default tag's transform.
        preprocessing=TORCHVISION_IMAGENET.with_resize(weights[0].resize, crop_fraction=weights[0].crop_fraction,
                                                       interpolation=weights[0].interpolation),
        min_input_size=MIN_INPUT_SIZE.get(name, 32),
        feature_dim=int(dim),
        num_params=sum(p.numel() for p in model.parameters()),
        weights=weights,
        unit_modules=UNIT_MODULES.get(name, ()),
        tap_layout=TAP_LAYOUT.get(name, ""),
        input_multiple=INPUT_MULTIPLE.get(name, 1),
        units=tuple(UnitSpec(u.name, u.kind, sum(p.numel() for p in u.parameters())) for u in units),
        family=re.sub(r"[\d_].*$", "", name),
        description=DESCRIPTIONS[name],
        license="BSD-3-Clause (torchvision code); ImageNet weights: see torchvision",
        source=f"torchvision.models.{name}",
    )
    return spec.to_dict()


def main() -> None:
    rows = [describe(n) for n in NAMES]
    OUT.write_text(json.dumps({"generator": f"torchvision {torchvision.__version__}", "backbones": rows}, indent=1) + "\n")
    print(f"wrote {OUT} ({len(rows)} backbones)")


if __name__ == "__main__":
    main()
