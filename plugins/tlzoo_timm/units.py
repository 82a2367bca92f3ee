"""tlzoo's one freeze rule applied to timm's models (imports torch and timm).

Convolutional families: weight layers in forward order, as for torchvision's models, with timm's own
weight layers counted as one layer each (``MixedConv2d`` holds one convolution per kernel size,
``CondConv2d`` is not a ``nn.Conv2d``). Families whose blocks contain attention: the units are timm's
fine block groups (``group_matcher(coarse=False)``, the grouping timm's layer-wise learning-rate decay
uses): the embedding, each block, the final norm.
"""

from __future__ import annotations

import re
from collections import defaultdict

from torch import nn

from tlzoo_torch.backend import WEIGHT_LAYERS


def weight_layers() -> tuple[type, ...]:
    from timm.layers import CondConv2d, MixedConv2d

    return WEIGHT_LAYERS + (MixedConv2d, CondConv2d)


_ATTENTION = re.compile(r"Attention|(Halo|Bottleneck|Lambda|Window|Grid|Neighborhood)Attn|MultiheadAttention")
_NOT_ATTENTION = re.compile(r"Channel|Spatial|Squeeze|Excite|Eca|Cbam|Gather")  # SE-like gates named "attention"


def has_attention(model: nn.Module) -> bool:
    """Whether any block holds self-attention (SE-like channel or spatial gates do not count)."""
    for module in model.modules():
        name = type(module).__name__
        if _ATTENTION.search(name) and not _NOT_ATTENTION.search(name):
            return True
    return False


def block_unit_modules(model: nn.Module) -> tuple[str, ...]:
    """The modules that are units, as ``unit_modules`` patterns, from timm's fine block groups; empty for a
    model without attention or without ``group_matcher`` (its weight layers are its units)."""
    if not has_attention(model) or not hasattr(model, "group_matcher"):
        return ()
    from timm.models._manipulate import group_parameters

    try:
        groups = group_parameters(model, model.group_matcher(coarse=False))
    except NotImplementedError:
        return ()
    group_of = {name: gid for gid, names in groups.items() for name in names}
    params_under: dict[str, set[int]] = defaultdict(set)  # module name -> the groups of every parameter under it
    for name, gid in group_of.items():
        parts = name.split(".")[:-1]
        for depth in range(1, len(parts) + 1):
            params_under[".".join(parts[:depth])].add(gid)
    # A group's units: its outermost modules whose every parameter is in that group (a class token or position
    # embedding on the model itself joins the first unit, as on torchvision's ViT).
    chosen = sorted(m for m, gids in params_under.items() if len(gids) == 1 and
                    (m.count(".") == 0 or len(params_under[m.rsplit(".", 1)[0]]) > 1))  # fmt: skip
    return _as_patterns(chosen, model)


def _as_patterns(names: list[str], model: nn.Module) -> tuple[str, ...]:
    """``blocks.0`` .. ``blocks.11`` as ``blocks.*`` when they are all of ``blocks``' children."""
    modules = dict(model.named_modules())
    by_parent: dict[str, list[str]] = defaultdict(list)
    for name in names:
        parent, _, leaf = name.rpartition(".")
        by_parent[parent if leaf.isdigit() and parent else name].append(name)
    patterns = []
    for parent, members in by_parent.items():
        children = [f"{parent}.{c}" for c, _ in modules[parent].named_children()] if parent in modules else []
        if len(members) > 1 and sorted(members) == sorted(children):
            patterns.append(f"{parent}.*")
        else:
            patterns.extend(members)
    return tuple(patterns)


def tap_layout(model: nn.Module, unit_modules: tuple[str, ...]) -> str:
    """Swin-like families keep their blocks' outputs as (N, H, W, C): timm says so in ``output_fmt``."""
    return "channels_last" if unit_modules and getattr(model, "output_fmt", "NCHW") == "NHWC" else ""


def input_multiple(model: nn.Module) -> int:
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if isinstance(patch, (tuple, list)) and patch and patch[0] == patch[-1]:
        return int(patch[0])
    return int(patch) if isinstance(patch, int) else 1
