"""A counting stand-in for a CUDA device, for tests and benchmarks on a machine without one.

:class:`CudaStandIn` makes torch's ``cuda`` device exist: ``torch.cuda.is_available()`` is true, and a tensor
made on or moved to ``cuda`` is a ``meta`` tensor instead (shapes and dtypes, no data, no arithmetic: the
network and every device-side operation cost next to nothing). What stays real is the host's work: the store's
reads, the feed's threads, pinning, the augmentation draws, bookkeeping.

Every call that would make the host wait for a GPU is counted in :attr:`CudaStandIn.blocking`, by kind and with
the line that made it:

- a copy to the device from pageable memory, or without ``non_blocking=True`` (``.to``, ``.cuda``, ``copy_``);
- a read of a device tensor: ``.cpu()``, ``.item()``, ``.tolist()``, ``.numpy()``, ``float()``, ``int()``,
  ``bool()`` (the value read is zero: a meta tensor has none);
- a tensor made on the device from host data: ``torch.tensor(..., device="cuda")``, ``torch.as_tensor``;
- ``torch.cuda.synchronize()`` and ``Event.synchronize()`` on the thread that runs the steps.

Pinned memory is emulated: ``pin_memory()`` is a copy into memory the stand-in marks pinned, and
``torch.empty(..., pin_memory=True)`` an allocation it marks so. On a real GPU,
``torch.cuda.set_sync_debug_mode("error")`` reports the same waits.

The counting is a :class:`torch.overrides.TorchFunctionMode`, which is per thread: calls on the feed's threads
are not counted (they may wait; the steps' thread must not), but device arguments on them are still turned
into ``meta`` by the patched entry points below.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

META = torch.device("meta")

_READS = {torch.Tensor.cpu: "cpu()", torch.Tensor.item: "item()", torch.Tensor.tolist: "tolist()",
          torch.Tensor.numpy: "numpy()", torch.Tensor.__float__: "float()", torch.Tensor.__int__: "int()",
          torch.Tensor.__bool__: "bool()", torch.Tensor.__index__: "int()"}  # fmt: skip
_MADE_FROM_HOST = {torch.tensor: "torch.tensor(device=)", torch.as_tensor: "torch.as_tensor(device=)"}
# never answered from the shape cache: they have effects beyond making tensors
_UNCACHED = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_, torch.Tensor.__setitem__,
             torch.Tensor.requires_grad_, torch.Tensor.pin_memory, torch.Tensor.cpu, torch.Tensor.item}
_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.arange, torch.randn, torch.rand,
              torch.randint, torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like, torch.eye,
              torch.linspace, torch.randperm, torch.empty_strided}  # fmt: skip


def _is_cuda(device: Any) -> bool:
    if device is None:
        return False
    if isinstance(device, int):
        return True
    if isinstance(device, str):
        return device.split(":")[0] == "cuda"
    return isinstance(device, torch.device) and device.type == "cuda"


def _leaves(args: Any, kwargs: Any) -> list[Any]:
    """The arguments, one level of lists and tuples opened (a foreach op's or ``torch.stack``'s tensors), the
    keywords' names and values: enough to key a call by, cheaper than a pytree."""
    out: list[Any] = []
    for value in (*args, *(kwargs or {}).items()):
        if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
            out.append(len(value))
            out.extend(value)
        else:
            out.append(value)
    return out


class _Stream:
    """``torch.cuda.Stream`` on the stand-in: work is ordered by the host already."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.device = torch.device("cuda", 0)

    def wait_event(self, event: Any) -> None:
        pass

    def wait_stream(self, stream: Any) -> None:
        pass

    def record_event(self, event: Any = None) -> Any:
        event = event or _Event()
        event.record(self)
        return event

    def synchronize(self) -> None:
        _active().count("stream.synchronize()")

    def query(self) -> bool:
        return True

    def is_capturing(self) -> bool:
        return False


class _Event:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded = False

    def record(self, stream: Any = None) -> None:
        self.recorded = True

    def wait(self, stream: Any = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        _active().count("event.synchronize()")

    def elapsed_time(self, other: Any) -> float:
        return 0.0


_ACTIVE: list[CudaStandIn] = []


def _active() -> CudaStandIn:
    return _ACTIVE[-1]


class CudaStandIn(TorchFunctionMode):
    """Use as ``with CudaStandIn() as cuda: ...``; ``cuda.blocking`` counts the waits (see the module)."""

    def __init__(self, name: str = "Stand-in GPU (tlzoo)", fast: bool = False) -> None:
        """``fast``: the network costs (almost) nothing: a device call's output shapes are inferred once per
        signature and then made as empty meta tensors, and a backward pass is skipped (no gradients: the
        optimizer steps over nothing). For measuring the host's share of a step; tests keep real meta semantics."""
        super().__init__()
        self.name = name
        self.fast = fast
        self._shapes: dict[Any, Any] = {}
        self.blocking: Counter[str] = Counter()
        self.where: list[str] = []  # the line of each counted call, for a failing test's message
        self.thread = threading.get_ident()
        self._pinned: dict[int, int] = {}  # data_ptr -> bytes, of the memory the stand-in calls pinned
        self.pinned_bytes = 0  # copied into pinned memory by pin_memory() (a host copy on a real GPU too)
        self._patches = contextlib.ExitStack()
        self._lock = threading.Lock()
        self.device_bytes = 0  # since the last reset_peak_memory_stats (see _counted)
        self.device_seconds = 0.0  # spent in calls on device tensors, on the steps' thread (see __torch_function__)
        self.device_calls = 0

    # -- counting ------------------------------------------------------------------------------------------
    def count(self, kind: str) -> None:
        if threading.get_ident() != self.thread:
            return
        self.blocking[kind] += 1
        frames = [f for f in traceback.extract_stack()[:-2] if "standin.py" not in f.filename]
        self.where.append(f"{kind} at {frames[-1].filename}:{frames[-1].lineno}" if frames else kind)

    def reset(self) -> None:
        self.blocking.clear()
        self.where.clear()
        self.device_seconds, self.device_calls = 0.0, 0

    @property
    def total(self) -> int:
        return sum(self.blocking.values())

    def is_pinned(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> bool:
        if tensor.device.type != "cpu" or tensor.numel() == 0:
            return tensor.device.type == "cpu"
        ptr = tensor.untyped_storage().data_ptr()
        return ptr in self._pinned

    def _pin_copy(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with self._lock:
            self.pinned_bytes += tensor.nbytes
        return self._pin(tensor.clone())

    def _pin(self, tensor: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self._pinned[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    # -- the mode ------------------------------------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        """Each torch call: dispatched as :meth:`_dispatch` says, its time put down to the device (and left out of
        the host's, :attr:`device_seconds`) when it works on device tensors, since on a GPU it would be a kernel
        queued for the device; a meta tensor's shape inference, which stands in for that kernel, can cost more
        than its launch would."""
        started = time.perf_counter()
        if self.fast and func is torch.Tensor.backward:
            result = None  # the network's backward pass: kernels on a GPU, none of the host's work here
        elif self.fast:
            result = self._cached(func, args, kwargs)
        else:
            result = self._dispatch(func, args, kwargs)
        first = args[0] if args else None
        if (isinstance(result, torch.Tensor) and result.device.type == "meta") or (
                isinstance(first, torch.Tensor) and first.device.type == "meta"):  # fmt: skip
            self.device_seconds += time.perf_counter() - started
            self.device_calls += 1
        return result

    def _cached(self, func: Any, args: Any, kwargs: Any) -> Any:
        """``fast``: a call on device tensors that makes new ones gives empty meta tensors of the shapes the first
        such call gave (shape inference once per signature, not once per step); anything else is dispatched."""
        if func in _UNCACHED:
            return self._dispatch(func, args, kwargs)
        key: list[Any] = [func]
        on_device = False
        for x in _leaves(args, kwargs):
            if isinstance(x, torch.Tensor):
                on_device = on_device or x.is_meta
                key += (x.shape, x.dtype, x.is_contiguous())  # (a torch.Size hashes as a tuple)
            else:
                key.append(x)
        if not on_device:
            return self._dispatch(func, args, kwargs)
        try:
            made = self._shapes.get(tuple(key))
        except TypeError:  # an unhashable argument
            return self._dispatch(func, args, kwargs)
        if made is None:
            result = self._dispatch(func, args, kwargs)
            outputs = result if isinstance(result, (tuple, list)) else (result,)
            if not outputs or not all(isinstance(o, torch.Tensor) and o.device.type == "meta" and
                                      not any(o is x for x in _leaves(args, kwargs)) for o in outputs):  # fmt: skip
                self._shapes[tuple(key)] = False  # not new device tensors alone: always dispatched
                return result
            self._shapes[tuple(key)] = ([(tuple(o.shape), o.stride(), o.dtype) for o in outputs],
                                 isinstance(result, (tuple, list)))  # fmt: skip
            return result
        if made is False:
            return self._dispatch(func, args, kwargs)
        shapes, many = made
        out = [torch.empty_strided(shape, stride, dtype=dtype, device=META) for shape, stride, dtype in shapes]
        return tuple(out) if many else out[0]

    def _dispatch(self, func: Any, args: Any, kwargs: Any) -> Any:
        kwargs = dict(kwargs or {})
        if func in _READS:
            tensor = args[0]
            if tensor.device.type == "meta":
                self.count(_READS[func])
                return func(torch.zeros(tensor.shape, dtype=tensor.dtype), *args[1:], **kwargs)
            return func(*args, **kwargs)
        if func in _MADE_FROM_HOST and _is_cuda(kwargs.get("device")):
            self.count(_MADE_FROM_HOST[func])
            kwargs["device"] = "cpu"
            return func(*args, **kwargs).to(META)
        if func in _FACTORIES:
            pin = kwargs.pop("pin_memory", False)
            if _is_cuda(kwargs.get("device")):
                kwargs["device"] = META
            made = self._counted(func(*args, **kwargs))
            return self._pin(made) if pin else made
        if func is torch.Tensor.to or func is torch.Tensor.cuda:
            return self._counted(self._moved(func, args, kwargs))
        if func is torch.Tensor.copy_:
            dst, src = args[0], args[1]
            if dst.device.type == "meta" and src.device.type == "cpu":
                if not (kwargs.get("non_blocking") or (len(args) > 2 and args[2])) or not self.is_pinned(src):
                    self.count("copy_ to the device from pageable memory or blocking")
                return dst
            if dst.device.type == "cpu" and src.device.type == "meta":
                if not (kwargs.get("non_blocking") or (len(args) > 2 and args[2])) or not self.is_pinned(dst):
                    self.count("copy_ from the device into pageable memory or blocking")
                return dst.zero_()  # a meta tensor has no values: zeros stand in for them
        return self._counted(func(*args, **kwargs))

    def _counted(self, result: Any) -> Any:
        """``result``; a device tensor's bytes added to what the device allocated (every result kept, none freed:
        an upper bound that grows with the batch, which is what AutoBatch's probe needs to see)."""
        if isinstance(result, torch.Tensor) and result.device.type == "meta":
            self.device_bytes += result.nelement() * result.element_size()
        return result

    def _moved(self, func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        tensor, rest = args[0], list(args[1:])
        device = kwargs.get("device")
        if func is torch.Tensor.cuda:
            device = "cuda"
            rest = []
        elif rest and isinstance(rest[0], (str, torch.device, int)) and not isinstance(rest[0], bool):
            device = rest.pop(0)
        elif rest and isinstance(rest[0], torch.Tensor):
            device = rest[0].device
            kwargs.setdefault("dtype", rest.pop(0).dtype)
        if not _is_cuda(device) and not (isinstance(device, torch.device) and device.type == "meta"):
            if device is not None and torch.device(device).type == "cpu" and tensor.device.type == "meta":
                self.count("a copy from the device (.to('cpu'))")
                return torch.zeros(tensor.shape, dtype=kwargs.get("dtype") or tensor.dtype)
            return func(*args, **kwargs)
        non_blocking = bool(kwargs.get("non_blocking") or (len(rest) >= 2 and rest[1] is True))
        if tensor.device.type == "cpu" and (not non_blocking or not self.is_pinned(tensor)):
            self.count("a copy to the device from pageable memory or blocking")
        dtype = kwargs.get("dtype") or (rest[0] if rest and isinstance(rest[0], torch.dtype) else None)
        out = tensor.to(META) if tensor.device.type != "meta" else tensor
        if dtype is not None:
            out = out.to(dtype)
        if kwargs.get("memory_format") is not None:
            out = out.contiguous(memory_format=kwargs["memory_format"])
        return out

    # -- entry points outside the mode ---------------------------------------------------------------------
    def __enter__(self) -> CudaStandIn:
        import warnings
        from unittest import mock

        _ACTIVE.append(self)
        p = self._patches
        p.enter_context(warnings.catch_warnings())
        # a checkpoint loaded into the meta model is a no-op, which torch warns about for every tensor
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        cuda = torch.cuda
        p.enter_context(mock.patch.object(torch.Tensor, "pin_memory", lambda t, *a, **k: self._pin_copy(t)))  # on every thread
        p.enter_context(mock.patch.object(torch.Tensor, "is_pinned", lambda t, *a, **k: self.is_pinned(t)))
        empty = torch.empty

        def empty_pinned(*args: Any, pin_memory: bool = False, **kwargs: Any) -> torch.Tensor:
            made = empty(*args, **kwargs)
            return self._pin(made) if pin_memory else made

        load = torch.load

        def load_to_host(*args: Any, map_location: Any = None, **kwargs: Any) -> Any:
            return load(*args, map_location="cpu" if _is_cuda(map_location) else map_location, **kwargs)

        p.enter_context(mock.patch.object(torch, "load", load_to_host))  # a checkpoint's tensors: the host's
        p.enter_context(mock.patch.object(torch, "empty", empty_pinned))  # the feed's threads allocate too
        p.enter_context(mock.patch.object(torch.Tensor, "record_stream", lambda t, stream: None))  # the feed's threads allocate too
        p.enter_context(mock.patch.object(cuda, "is_available", lambda: True))
        p.enter_context(mock.patch.object(cuda, "device_count", lambda: 1))
        p.enter_context(mock.patch.object(cuda, "is_bf16_supported", lambda *a, **k: True))
        p.enter_context(mock.patch.object(cuda, "get_device_name", lambda *a, **k: self.name))
        p.enter_context(mock.patch.object(cuda, "set_device", lambda *a, **k: None))
        p.enter_context(mock.patch.object(cuda, "current_device", lambda: 0))
        p.enter_context(mock.patch.object(cuda, "synchronize", lambda *a, **k: self.count("torch.cuda.synchronize()")))
        p.enter_context(mock.patch.object(cuda, "Stream", _Stream))
        p.enter_context(mock.patch.object(cuda, "Event", _Event))
        p.enter_context(mock.patch.object(cuda, "current_stream", lambda *a, **k: _Stream()))
        p.enter_context(mock.patch.object(torch.accelerator, "current_stream", lambda *a, **k: _Stream()))
        p.enter_context(mock.patch.object(cuda, "stream", lambda *a, **k: contextlib.nullcontext()))
        p.enter_context(mock.patch.object(cuda, "mem_get_info", lambda *a, **k: (80 << 30, 80 << 30)))
        p.enter_context(mock.patch.object(cuda, "memory_reserved", lambda *a, **k: 0))
        p.enter_context(mock.patch.object(cuda, "memory_allocated", lambda *a, **k: 0))
        p.enter_context(mock.patch.object(cuda, "max_memory_allocated", lambda *a, **k: self.device_bytes))
        p.enter_context(mock.patch.object(cuda, "reset_peak_memory_stats", lambda *a, **k: setattr(self, "device_bytes", 0)))
        p.enter_context(mock.patch.object(cuda, "get_rng_state", lambda *a, **k: torch.get_rng_state()))
        p.enter_context(mock.patch.object(cuda, "set_rng_state", lambda *a, **k: None))
        p.enter_context(mock.patch.object(cuda, "empty_cache", lambda: None))
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._patches.close()
            _ACTIVE.remove(self)


@contextlib.contextmanager
def steps_counted(cuda: CudaStandIn) -> Iterator[Counter[str]]:
    """The blocking calls made inside the block (a fresh count; the stand-in's total keeps growing)."""
    before = Counter(cuda.blocking)
    got: Counter[str] = Counter()
    try:
        yield got
    finally:
        got.update(cuda.blocking - before)
