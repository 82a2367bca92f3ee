"""Keep glibc from handing large tensor buffers back to the OS after every batch.

glibc serves allocations above its mmap threshold with fresh ``mmap`` calls and
returns them with ``munmap`` on free; the heap's top is trimmed back to the OS
too. A CPU training or inference loop allocates and frees the same
tens-of-megabytes activation buffers every batch, so it pays page faults and
zeroing for each of them: measured here, torch MobileNetV2 inference ran at a
third of its speed and spent most of its time in the kernel
(``benchmarks/allocator.py``). Raising the mmap threshold to its maximum and
the trim threshold far above it keeps those buffers in the process for reuse,
which is what ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` do, but
from inside the process, so it works without a wrapper script.

Called before torch is imported by every tlzoo entry point that runs torch.
``TLZOO_MALLOC=default`` leaves glibc as it is (for comparisons, or when
another allocator such as jemalloc is preloaded).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); larger values are refused.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 1024 * 1024 * 1024

_state: dict[str, bool] = {}


def tune() -> bool:
    """Apply the settings once per process; returns whether glibc accepted them."""
    if "tuned" in _state:
        return _state["tuned"]
    _state["tuned"] = False
    if os.environ.get("TLZOO_MALLOC", "").strip().lower() in ("default", "0", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    _state["tuned"] = ok
    return ok


def tuned() -> bool:
    return _state.get("tuned", False)
