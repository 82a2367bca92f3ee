"""Keep glibc from handing large tensor buffers back to the OS after every batch.

glibc serves allocations above its mmap threshold with fresh ``mmap`` calls and
returns them with ``munmap`` on free, and trims the heap's top back to the OS.
A CPU training or inference loop allocates and frees the same tens-of-megabytes
activation buffers every batch, so it pays page faults and zeroing for each of
them. Raising the threshold is not enough: glibc caps it at 32 MiB, and a
MobileNetV2 batch of 32 at 224 px has 50 MB activations. So tlzoo turns mmap
off for the heap (``M_MMAP_MAX=0``) and sets the trim threshold far above any
batch: buffers stay in the process and are reused. Measured interleaved in one
run (``python benchmarks/allocator.py``, MobileNetV2, channels_last, 2-core
Xeon): inference 62 -> 150 img/s (2.41x), training 75 -> 94 img/s (1.26x),
kernel time 9.6 -> 0.8 s; the 32 MiB threshold alone gave 1.17x.
Freed memory is kept for reuse rather than returned, so a process's resident
size stays at its peak, as with any caching allocator.

Applied by every tlzoo entry point that runs torch, before torch allocates.
``TLZOO_MALLOC=default`` leaves glibc as it is (for comparisons, or when
another allocator such as jemalloc is preloaded); ``TLZOO_MALLOC=threshold``
only raises the mmap threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
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
    mode = os.environ.get("TLZOO_MALLOC", "").strip().lower()
    if mode == "threshold":  # the mmap threshold at its cap only: buffers above 32 MiB are still mmapped
        ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    else:  # no mmap at all: every buffer comes from the heap and stays there for reuse
        ok = bool(mallopt(_M_MMAP_MAX, 0))
    ok = ok and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    _state["tuned"] = ok
    return ok


def tuned() -> bool:
    return _state.get("tuned", False)
