"""Builders for timm backbones: ``num_classes=0``, pooled pre-logits features out (imports timm).

A weights file is loaded by timm itself (``pretrained_cfg_overlay=dict(file=...)``), which runs the
architecture's own checkpoint conversion (a 518-px DINOv2 file into a 224-px model) and reads
``.safetensors`` without code, ``.pth`` with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .hub import respect_tlzoo_offline

respect_tlzoo_offline()

import timm  # noqa: E402
from timm.models import get_pretrained_cfg  # noqa: E402
from torch import nn  # noqa: E402


def tag_of(spec: Any, weights: str | None) -> str:
    """The tag a weights file is (found by its cached file name), else the architecture's default tag."""
    if weights is not None:
        name = Path(weights).name
        for w in spec.weights:
            if w.file_name == name:
                return str(w.tag)
    return str(spec.weights[0].tag) if spec.weights else ""


def build(*, spec: Any, weights: str | None, input_size: tuple[int, int]) -> nn.Module:
    return create(spec.name, tag_of(spec, weights), weights, input_size)


def create(arch: str, tag: str, weights: str | None, input_size: tuple[int, int], **kwargs: Any) -> nn.Module:
    """``timm.create_model`` giving pooled pre-logits features (no classifier), built for ``input_size`` where the
    architecture is fixed to one, with ``weights`` (a local file) loaded as ``tag``'s; ``kwargs`` go to the
    model (tests shrink it).

    A file is loaded strictly into a model with a classifier as wide as the file's (none when it has none), then
    the classifier is removed: timm loads a file into a model whose class count differs from the tag's
    non-strictly, so a file with the wrong tensors would load silently, half random."""
    name = f"{arch}.{tag}" if tag else arch
    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = tuple(input_size)  # position embeddings are made for one grid of patches
    if weights is None:
        return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    classes = _classes_in(Path(weights), cfg.classifier if cfg is not None else "")
    model = timm.create_model(name, pretrained=True, num_classes=classes,
                              pretrained_cfg_overlay={"file": str(weights), "num_classes": classes}, **kwargs)  # fmt: skip
    model.reset_classifier(0)
    return model


def _classes_in(path: Path, classifier: Any) -> int:
    """The rows of the file's classifier weight (``head.weight``, say): 0 when it has no classifier."""
    key = f"{classifier[0] if isinstance(classifier, (tuple, list)) else classifier}.weight"
    if path.suffix == ".safetensors":
        from .hub import safetensors_header

        shape = safetensors_header(path).get(key, {}).get("shape")
    else:
        from timm.models import load_state_dict

        tensor = load_state_dict(str(path), weights_only=True).get(key)
        shape = None if tensor is None else list(tensor.shape)
    return int(shape[0]) if shape else 0
