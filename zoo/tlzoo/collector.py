"""Python's cyclic garbage collector around a framework's import.

Importing torch with torchvision, or TensorFlow, makes millions of long-lived objects (modules, classes,
functions, sympy's and dynamo's tables). While they are made, a collection starts every few hundred
allocations, and each full one walks all of them again; when the process ends, the interpreter walks them
once more. So tlzoo imports a plugin's module (:func:`tlzoo.plugins.load_object`, through which every
framework is first imported) with the collector paused, and in a process of its own (the CLI, and the
torchrun workers it starts) then moves what exists to the permanent generation (:func:`gc.freeze`), which no
later collection walks. The garbage made before the import is collected first, so what is frozen is what
lives.

Measured interleaved on the 2-core Xeon (``python benchmarks/collector.py``, medians of 5 rounds, wall time of
a new process, its exit included): loading the torch adapter 1.56 -> 1.20 s and the Keras one (TensorFlow)
3.97 -> 2.74 s; the smallest ``tlzoo train`` (24 images at 32 px) 5.45 -> 4.04 s on torch/mobilenet_v2 and
5.94 -> 5.12 s on keras/mobilenet_v2. Peak memory grows by about 6 MB (the import's own cyclic garbage, kept).

A program that imports tlzoo as a library keeps its collector: its import is paused, not frozen (a frozen
object that later becomes cyclic garbage is never freed, and tlzoo does not decide that for someone else's
process). ``TLZOO_GC=default`` leaves the collector alone everywhere.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_state = {"depth": 0, "resume": False, "own": False}


def own_process() -> None:
    """Say that this process is tlzoo's (its CLI's): framework imports may be frozen."""
    _state["own"] = True


def _wanted() -> bool:
    return os.environ.get("TLZOO_GC", "").strip().lower() not in ("default", "0", "off")


@contextmanager
def paused_for_import() -> Iterator[None]:
    """The collector paused for what runs inside (an import); then, in tlzoo's own process, everything that
    lives frozen. Nested and concurrent uses pause once and resume when the last one ends; a collector the
    program had disabled stays disabled."""
    if not _wanted():
        yield
        return
    with _lock:
        if _state["depth"] == 0:
            _state["resume"] = gc.isenabled()
            if _state["resume"] and _state["own"]:
                gc.collect()  # walks only what is not frozen yet: the garbage made before the import is not kept
            gc.disable()
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0 and _state["resume"]:
                if _state["own"]:
                    gc.freeze()
                gc.enable()
