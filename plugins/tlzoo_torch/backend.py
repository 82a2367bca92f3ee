"""Freeze units, taps and feature extraction for torch backbones.

Units are found by running the model once on a dummy batch with forward hooks
on every weight and normalization layer, so their order is the real forward
order, not the order modules happen to be declared in.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlzoo.allocator import tune as _tune_allocator

_tune_allocator()  # before torch allocates its first buffers (see tlzoo.allocator)
import torch  # noqa: E402
from torch import nn

from tlzoo.backbone import Backbone, Unit
from tlzoo.errors import UsageError

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
NORM_LAYERS = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


@dataclass
class TorchUnit:
    name: str
    kind: str
    modules: list[nn.Module] = field(default_factory=list)
    norms: list[nn.Module] = field(default_factory=list)
    extra_params: list[nn.Parameter] = field(default_factory=list)
    last_member: str = ""
    whole_subtree: bool = False  # a block unit (unit_modules): every parameter under its module

    def parameters(self) -> list[nn.Parameter]:
        # A weight layer's own sub-layers (timm's MixedConv2d holds one convolution per kernel size) are part of it.
        params = [p for m in self.modules for p in m.parameters()]
        params += [p for m in self.norms for p in m.parameters(recurse=self.whole_subtree)]
        if self.whole_subtree:
            params = list({id(p): p for p in params}.values())  # a block's norms are inside it
        return params + self.extra_params


# Devices whose batches are normalized on the host (numpy's table lookup) rather than where the model runs.
HOST_NORMALIZED = ("cpu",)


def normalized_on(images: Any, prep: Any, device: torch.device) -> torch.Tensor:
    """RGB uint8 NHWC (host array, or a tensor already on ``device``) -> float32 NCHW (channels_last) on
    ``device``, by the float32 arithmetic of :func:`tlzoo.images.normalize.normalize` (the same values: features
    computed on a GPU equal the host's, for the feature cache and the exports' checks)."""
    if isinstance(images, torch.Tensor):  # a batch a GPU decoder left on the device (NHWC)
        x = images.to(device, non_blocking=True).permute(0, 3, 1, 2)
    else:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True).permute(0, 3, 1, 2)
    if prep.channel_order == "BGR":
        x = x.flip(1)
    x = x.float()
    if prep.value_range != 255.0:
        x = x * float(np.float32(prep.value_range / 255.0))
    mean, std = normalization_constants(tuple(prep.mean), tuple(prep.std), device)
    return (x - mean) / std


def normalized(x: torch.Tensor, prep: Any) -> torch.Tensor:
    """uint8 NCHW on a device -> float32 ``(x * value_range / 255 - mean) / std`` as one fused multiply-add with
    constants made once per device: two kernels a training batch where four would each be a launch (the values
    within float32 rounding of :func:`normalized_on`'s)."""
    if prep.channel_order == "BGR":
        x = x.flip(1)
    scale, shift = affine_constants(tuple(prep.mean), tuple(prep.std), float(prep.value_range), x.device)
    return torch.addcmul(shift, x.float(), scale)


@functools.lru_cache(maxsize=64)
def normalization_constants(mean: tuple[float, ...], std: tuple[float, ...],
                            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The mean and std as (1, 3, 1, 1) float32 tensors on ``device``, made once per process: a tensor made from
    Python numbers on a GPU is a blocking copy, which would wait for the device at every batch."""
    return (torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1))  # fmt: skip


@functools.lru_cache(maxsize=64)
def affine_constants(mean: tuple[float, ...], std: tuple[float, ...], value_range: float,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``scale`` and ``shift`` as (1, 3, 1, 1) float32 tensors on ``device`` (``x * scale + shift`` normalizes),
    made once per process, as :func:`normalization_constants`."""
    m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return (torch.tensor((value_range / 255.0) / s, dtype=torch.float32, device=device).view(1, 3, 1, 1),
            torch.tensor(-m / s, dtype=torch.float32, device=device).view(1, 3, 1, 1))  # fmt: skip


def _forward_order(model: nn.Module, modules: list[nn.Module], input_size: tuple[int, int]) -> list[nn.Module]:
    """``modules`` in the order one forward pass on a blank image runs them (those that never run left out)."""
    order: list[nn.Module] = []
    seen: set[int] = set()

    def record(module: nn.Module, *_: Any) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            order.append(module)

    hooks = [m.register_forward_hook(record) for m in modules]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # "meta": a spec generator's build
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


def trace_units(model: nn.Module, input_size: tuple[int, int], unit_modules: tuple[str, ...] = (),
                weight_layers: tuple[type, ...] = WEIGHT_LAYERS) -> list[TorchUnit]:  # fmt: skip
    """Weight layers in forward order, each with the normalization layers that follow it; or, when the
    spec names ``unit_modules``, those modules (transformer blocks, say) in forward order, each with its
    whole sub-tree. ``weight_layers`` may add a library's own weight-layer classes (timm's mixed and
    conditional convolutions); a weight layer inside another one is part of it, not a unit of its own."""
    if unit_modules:
        return _block_units(model, input_size, unit_modules)
    names = {id(m): n for n, m in model.named_modules()}
    layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, weight_layers)]
    inner = {id(sub) for m in layers for sub in m.modules() if sub is not m}
    candidates = [m for m in model.modules() if isinstance(m, weight_layers + NORM_LAYERS) and id(m) not in inner]
    order = _forward_order(model, candidates, input_size)
    units: list[TorchUnit] = []
    leading_norms: list[nn.Module] = []
    for module in order:
        name = names[id(module)]
        if isinstance(module, weight_layers):
            units.append(TorchUnit(name=name, kind=type(module).__name__, modules=[module], last_member=name))
            units[-1].norms.extend(leading_norms)
            leading_norms = []
        elif units:
            units[-1].norms.append(module)
            units[-1].last_member = name
        else:
            leading_norms.append(module)
    _assign_loose_parameters(model, units, weight_layers)
    return units


def _block_units(model: nn.Module, input_size: tuple[int, int], patterns: tuple[str, ...]) -> list[TorchUnit]:
    from tlzoo.freeze import matches_unit_modules

    matched = {n: m for n, m in model.named_modules() if n and matches_unit_modules(n, patterns)}
    outermost = {n: m for n, m in matched.items() if not any(n.startswith(other + ".") for other in matched)}
    names = {id(m): n for n, m in outermost.items()}
    units = []
    for module in _forward_order(model, list(outermost.values()), input_size):
        name = names[id(module)]
        norms = [m for m in module.modules() if isinstance(m, NORM_LAYERS)]
        units.append(TorchUnit(name=name, kind=type(module).__name__, modules=[module], norms=norms,
                               last_member=name, whole_subtree=True))  # fmt: skip
    if units:  # a class token or position embedding, outside every block, is part of the input embedding
        owned = {id(p) for u in units for p in u.parameters()}
        units[0].extra_params.extend(p for p in model.parameters() if id(p) not in owned)
    return units


def _assign_loose_parameters(model: nn.Module, units: list[TorchUnit], weight_layers: tuple[type, ...]) -> None:
    """Parameters held directly by container modules (ConvNeXt's layer_scale, say) join the
    last unit inside that container: they scale or shift its output."""
    owner_unit = {id(m): u for u in units for m in u.modules + u.norms}
    inside = {id(sub) for u in units for m in u.modules for sub in m.modules()}
    for container_name, container in model.named_modules():
        if isinstance(container, weight_layers + NORM_LAYERS) or id(container) in inside:
            continue
        own = list(container.parameters(recurse=False))
        if not own or not units:
            continue
        inner = [owner_unit[id(m)] for m in container.modules() if id(m) in owner_unit]
        if container_name == "" or not inner:
            target = units[0]
        else:
            target = max(inner, key=units.index)
        target.extra_params.extend(own)


class FrozenNormsStayInEval(nn.Module):
    """The backbone as a module whose frozen normalization layers stay in inference mode
    whatever ``train()`` is called with, so their running statistics never move."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.frozen_norms: list[nn.Module] = []

    def train(self, mode: bool = True) -> FrozenNormsStayInEval:
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class TappedFeatures(nn.Module):
    """The backbone truncated after one unit, globally average-pooled: over the spatial axes of an
    (N, C, H, W) output, or of an (N, H, W, C) one when ``channels_last``, and over the tokens of (N, L, C)."""

    def __init__(self, extractor: nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.extractor = extractor
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.extractor(x)["tap"]
        if out.ndim == 3:  # (N, tokens, C)
            return out.mean(dim=1)
        if out.ndim > 3:
            return out.mean(dim=tuple(range(1, out.ndim - 1)) if self.channels_last else tuple(range(2, out.ndim)))
        return out


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An inference-only copy of ``model`` with each batch norm that follows a convolution folded into the
    convolution's weights (torch.fx's ``fuse``): the same function in eval mode, minus one pass over every
    activation. MobileNetV2 at 224 px runs 1.35x faster on CPU (benchmarks/feature_speed.py). ``model`` itself
    is returned, unchanged, when it has no batch norm or torch.fx cannot trace it."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    import copy

    from torch.fx.experimental.optimization import fuse

    tapped = isinstance(model, TappedFeatures)
    target = copy.deepcopy(model.extractor if tapped else model).eval()  # the tap's dict output cannot be traced
    try:
        folded = fuse(target, inplace=True)
    except Exception:  # noqa: BLE001 - a model torch.fx cannot trace runs as it is
        return model
    return TappedFeatures(folded, channels_last=model.channels_last).eval() if tapped else folded.eval()


HALF_TOLERANCE = 1e-2  # largest feature difference to fp32's, relative to the features' scale, that fp16 may make


def _checked(backbone: Backbone, model: nn.Module, make: Callable[[np.ndarray], nn.Module],
             tolerance: float) -> nn.Module:  # fmt: skip
    """``make(probe)``'s model when its features on a random probe batch have ``model``'s shape, are finite and
    stay within ``tolerance`` of ``model``'s (relative to their scale); else ``model`` itself, as when making or
    running the candidate fails."""
    h, w = backbone.input_size
    probe = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)
    try:
        candidate = make(probe)
        expected, got = backbone._run(model, probe), backbone._run(candidate, probe)
    except Exception:  # noqa: BLE001 - a candidate the framework or device cannot make or run is not used
        return model
    if got.shape != expected.shape or not np.isfinite(got).all():
        return model
    scale = max(float(np.abs(expected).max()), 1e-6)
    return candidate if float(np.abs(got - expected).max()) / scale <= tolerance else model


def reduced_precision(backbone: Backbone, model: nn.Module, dtype: torch.dtype = torch.float16,
                      tolerance: float = HALF_TOLERANCE) -> nn.Module:  # fmt: skip
    """A copy of ``model`` in ``dtype`` when its features on a probe batch stay within ``tolerance`` of the
    fp32 model's (relative to their scale); else ``model`` itself. The frozen backbone on a GPU runs its
    convolutions on the tensor cores in fp16, where the check allows."""
    import copy

    return _checked(backbone, model, lambda probe: copy.deepcopy(model).to(dtype), tolerance)


CPU_TOLERANCE = 1e-4  # largest feature difference to eager's, relative to the features' scale, oneDNN's graph may make


class OptimizedForCpu(nn.Module):
    """A frozen model as one TorchScript graph that oneDNN has rewritten for inference (its layout kept
    between layers, each activation fused into the convolution before it); made by :func:`optimized_for_cpu`."""

    _tlzoo_channels_last = True  # the graph picks its own layouts

    def __init__(self, scripted: Any) -> None:
        super().__init__()
        self.scripted = scripted
        self.register_buffer("placement", torch.zeros(()), persistent=False)  # where and in what dtype it runs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scripted(x)


def optimized_for_cpu(backbone: Backbone, model: nn.Module, tolerance: float = CPU_TOLERANCE) -> nn.Module:
    """``model`` (frozen, fp32, on the CPU) traced, frozen and optimized for inference by oneDNN when its
    features on a probe batch stay within ``tolerance`` of the eager model's; else ``model`` itself.
    MobileNetV2 at 224 px extracts 1.14x faster on 2 cores (benchmarks/feature_speed.py). TorchScript is
    deprecated in favour of torch.compile, whose cold compile takes longer on a CPU than most extractions;
    a model TorchScript cannot trace, or a torch without it, runs eagerly."""
    import copy
    import warnings

    def graph(probe: np.ndarray) -> nn.Module:
        with torch.inference_mode(False), torch.no_grad():
            example = torch.from_numpy(probe).permute(0, 3, 1, 2)
            traced = torch.jit.trace(copy.deepcopy(model).eval(), example, check_trace=False)
            return OptimizedForCpu(torch.jit.optimize_for_inference(torch.jit.freeze(traced)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices and tracer warnings
        return _checked(backbone, model, graph, tolerance)


class TorchBackbone(Backbone):
    takes_device_batches = True  # run_images takes a torch batch already on the device (nvJPEG's)

    framework = "torch"
    weight_layers: tuple[type, ...] = WEIGHT_LAYERS  # what a freeze unit is, beside the spec's unit_modules

    def __init__(self, spec, model, input_size, weights):  # type: ignore[no-untyped-def]
        if not isinstance(model, nn.Module):
            raise UsageError(f"builder of {spec.id} returned {type(model).__name__}, not a torch.nn.Module")
        super().__init__(spec, FrozenNormsStayInEval(model), input_size, weights)
        self.model.eval()
        self._units = trace_units(self.model.model, input_size, spec.unit_modules, self.weight_layers)

    def fx_helpers(self) -> tuple[Any, Any]:
        """``(get_graph_node_names, create_feature_extractor)`` that trace this model for ``--tap``
        (torchvision's; a library with its own leaf modules, like timm, brings its own)."""
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

        return get_graph_node_names, create_feature_extractor

    @property
    def units(self) -> list[Unit]:
        return [
            Unit(index=i + 1, name=u.name, kind=u.kind, params=sum(p.numel() for p in u.parameters()))
            for i, u in enumerate(self._units)
        ]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _freeze_units(self, count: int, whole: bool, all_norms: bool) -> None:
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.frozen_norms = []
        for unit in self._units[:count]:
            for p in unit.parameters():
                p.requires_grad_(False)
            self.model.frozen_norms.extend(unit.norms)
        if whole:
            for p in self.model.parameters():
                p.requires_grad_(False)
        if whole or all_norms:
            self.model.frozen_norms = [m for m in self.model.modules() if isinstance(m, NORM_LAYERS)]
            for norm in self.model.frozen_norms:
                norm.requires_grad_(False)
        self.model.train(self.model.training)

    def feature_model(self, tap: int | None = None) -> nn.Module:
        if tap is None:
            return self.model
        get_graph_node_names, create_feature_extractor = self.fx_helpers()
        node = self._units[tap].last_member
        try:
            nodes = get_graph_node_names(self.model.model)[1]

            def traced(name: str) -> bool:  # a node, or a module whose operations are nodes (its last one is tapped)
                return any(n == name or n.startswith(name + ".") for n in nodes)

            # torch.fx keeps some blocks (torchvision's Conv2dNormActivation) whole: tap the block that holds the unit
            while not traced(node) and "." in node:
                node = node.rsplit(".", 1)[0]
            extractor = create_feature_extractor(self.model.model, return_nodes={node: "tap"})
        except Exception as exc:
            raise UsageError(
                f"cannot tap unit {tap + 1} ({node}) of {self.spec.id}: torch.fx could not trace the model "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        return TappedFeatures(extractor, channels_last=self.spec.tap_layout == "channels_last")

    def inference_model(self, tap: int | None = None, device: str | None = None) -> nn.Module:
        model = fold_batch_norms(self.feature_model(tap))
        kind = torch.device(device).type if device else "cpu"
        if kind == "cpu":
            return optimized_for_cpu(self, model)
        return reduced_precision(self, model.to(torch.device(device))) if kind == "cuda" else model.to(device)

    def parameter_arrays(self) -> list[np.ndarray]:
        return [t.detach().cpu().numpy() for t in self.model.state_dict().values()]

    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))

    def _run(self, model: Any, batch: np.ndarray) -> np.ndarray:
        def inputs(device: torch.device | None, dtype: torch.dtype | None) -> torch.Tensor:
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).permute(0, 3, 1, 2)
            return x if device is None else x.to(device=device, dtype=dtype)

        return np.asarray(self._forward(model, inputs))

    def run_images(self, model: Any, images: np.ndarray) -> Any:  # an array, or OnTheWay from a GPU
        """On a GPU the uint8 batch crosses (a quarter of float32's bytes) and is normalized there; on the CPU
        tlzoo's table lookup (:func:`tlzoo.images.normalize.normalize`) is faster than torch's four passes."""
        weight = next(itertools.chain(model.parameters(), model.buffers()), None)
        if isinstance(images, torch.Tensor) and (weight is None or weight.device.type in HOST_NORMALIZED):
            images = images.cpu().numpy()
        if weight is None or weight.device.type in HOST_NORMALIZED:
            return self._run(model, self.preprocess(images))
        prep = self.spec.preprocessing
        return self._forward(model, lambda device, dtype: normalized_on(images, prep, device).to(dtype))

    def _forward(self, model: Any,
                 inputs: Callable[[torch.device | None, torch.dtype | None], torch.Tensor]) -> np.ndarray | OnTheWay:  # fmt: skip
        """``model`` on ``inputs(device, dtype)`` (its parameters' device and dtype; None: it has none), in
        inference mode, as channels_last; the features as float32 on the host, or on their way there
        (:class:`OnTheWay`) from a GPU, so that the next batch is queued without waiting for this one."""
        was_training = model.training
        model.eval()
        if not getattr(model, "_tlzoo_channels_last", False):
            # oneDNN's and cuDNN's convolutions run fastest on channels_last weights and inputs; the NHWC
            # batch viewed as NCHW already is channels_last, so no copy is made (benchmarks/feature_speed.py).
            model.to(memory_format=torch.channels_last)
            model._tlzoo_channels_last = True
        try:
            with torch.inference_mode():
                weight = next(itertools.chain(model.parameters(), model.buffers()), None)
                out = model(inputs(None, None) if weight is None else inputs(weight.device, weight.dtype))
        finally:
            model.train(was_training)
        out = out.float()
        return out.numpy() if out.device.type == "cpu" else OnTheWay(out)


class OnTheWay:
    """Features copied from the device into pinned host memory without waiting: :meth:`ready` says whether the
    copy is done (it never waits), ``np.asarray`` waits for it and gives the array."""

    def __init__(self, features: torch.Tensor) -> None:
        self.host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True)
        self.host.copy_(features, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record(torch.cuda.current_stream(features.device))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.host.shape)

    def __len__(self) -> int:
        return int(self.host.shape[0])

    def ready(self) -> bool:
        return bool(self.copied.query())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if not self.copied.query():
            self.copied.synchronize()
        array = self.host.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)
