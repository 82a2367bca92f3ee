"""Regenerate backbones.json from keras.applications itself (maintainers only).

    python -m tlzoo_keras._generate

Weight file names, URLs and hashes are read from Keras' own calls to
``get_file`` (intercepted, nothing is downloaded). Accuracies are those Keras
publishes for its applications (keras.io/api/applications).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import keras

from tlzoo_keras.backend import keras_units
from tlzoo.specs import KERAS_CAFFE, KERAS_RAW, KERAS_TF, KERAS_TORCH, BackboneSpec, UnitSpec, WeightsSpec

from .build import CONSTRUCTORS, build, constructor

OUT = Path(__file__).with_name("backbones.json")
PREPROCESSING = {
    "vgg16": KERAS_CAFFE, "vgg19": KERAS_CAFFE, "resnet50": KERAS_CAFFE,
    "mobilenet_v2": KERAS_TF, "inception_v3": KERAS_TF, "xception": KERAS_TF,
    "densenet121": KERAS_TORCH, "efficientnet_b0": KERAS_RAW,
}  # fmt: skip
INPUT_SIZE = {"inception_v3": 299, "xception": 299}
MIN_INPUT_SIZE = {"inception_v3": 75, "xception": 71}
PUBLISHED_ACCURACY = {  # (top-1, top-5) %, keras.io/api/applications
    "vgg16": (71.3, 90.1), "vgg19": (71.3, 90.0), "resnet50": (74.9, 92.1), "mobilenet_v2": (71.3, 90.1),
    "inception_v3": (77.9, 93.7), "efficientnet_b0": (77.1, 93.3), "densenet121": (75.0, 92.3),
    "xception": (79.0, 94.5),
}  # fmt: skip
DESCRIPTIONS = {
    "vgg16": "VGG-16 (keras.applications): 13 convolutions, caffe-style BGR preprocessing",
    "vgg19": "VGG-19 (keras.applications): 16 convolutions, caffe-style BGR preprocessing",
    "resnet50": "ResNet-50 (keras.applications): bottleneck residual network, caffe-style preprocessing",
    "mobilenet_v2": "MobileNetV2 (keras.applications): inverted residuals, inputs scaled to -1..1",
    "inception_v3": "Inception v3 (keras.applications): 299x299 input, scaled to -1..1",
    "efficientnet_b0": "EfficientNet-B0 (keras.applications): normalizes 0..255 RGB inside the model",
    "densenet121": "DenseNet-121 (keras.applications): torch-style mean/std preprocessing",
    "xception": "Xception (Chollet 2017, keras.applications): depthwise separable convolutions, 299x299",
}


class _Intercepted(Exception):
    pass


def weights_file(name: str) -> dict[str, Any]:
    """What Keras would download for include_top=False, weights='imagenet'."""
    seen: dict[str, Any] = {}

    def fake_get_file(fname: str | None = None, origin: str | None = None, *args: Any, **kwargs: Any) -> str:
        seen.update(fname=fname, origin=origin, file_hash=kwargs.get("file_hash"))
        raise _Intercepted

    import keras.src.utils.file_utils as file_utils

    real = file_utils.get_file
    file_utils.get_file = fake_get_file
    try:
        constructor(name)(include_top=False, weights="imagenet", pooling="avg")
    except _Intercepted:
        pass
    finally:
        file_utils.get_file = real
    top1, top5 = PUBLISHED_ACCURACY[name]
    return {
        "tag": "imagenet",
        "file_name": seen["fname"],
        "file_hash": seen["file_hash"] or "",
        "hash_algorithm": "md5" if seen["file_hash"] and len(seen["file_hash"]) == 32 else "sha256",
        "url": seen["origin"],
        "source": "keras.applications",
        "metrics": {"acc@1": top1, "acc@5": top5},
    }


def describe(name: str) -> dict[str, Any]:
    size = INPUT_SIZE.get(name, 224)
    draft = BackboneSpec(
        name=name, framework="keras", builder="tlzoo_keras.build:build", input_size=(size, size),
        feature_dim=0, num_params=0, preprocessing=PREPROCESSING[name],
    )  # fmt: skip
    model = build(spec=draft, weights=None, input_size=(size, size))
    units = keras_units(model)
    spec = dataclasses.replace(
        draft,
        min_input_size=MIN_INPUT_SIZE.get(name, 32),
        feature_dim=int(model.output.shape[-1]),
        num_params=int(model.count_params()),
        weights=(WeightsSpec(**weights_file(name)),),
        units=tuple(UnitSpec(u.name, u.kind, u.params) for u in units),
        family=re.sub(r"[\d_].*$", "", name),
        description=DESCRIPTIONS[name],
        license="Apache-2.0 (Keras code); ImageNet weights: see keras.io/api/applications",
        source=f"keras.applications.{CONSTRUCTORS[name]}",
    )
    keras.backend.clear_session()
    return spec.to_dict()


def main() -> None:
    rows = [describe(n) for n in CONSTRUCTORS]
    OUT.write_text(json.dumps({"generator": f"keras {keras.__version__}", "backbones": rows}, indent=1) + "\n")
    print(f"wrote {OUT} ({len(rows)} backbones)")


if __name__ == "__main__":
    main()
