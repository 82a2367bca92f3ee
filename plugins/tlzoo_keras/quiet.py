"""Import TensorFlow and Keras without their native start-up noise.

TensorFlow 2.21 prints oneDNN and CUDA-driver lines from C++ before its
logging is initialised (``TF_CPP_MIN_LOG_LEVEL`` does not reach them) and an
error line about ``cuInit`` on every machine without a GPU. None of it is
something a tlzoo user can act on, so the native stderr is pointed at
/dev/null while TensorFlow loads and finds its devices. Python exceptions are
unaffected. ``TLZOO_VERBOSE=1`` shows everything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    if os.environ.get("TLZOO_VERBOSE", "").strip() not in ("", "0"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real file descriptor 2 (some notebook kernels)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Test hook: split the CPU into N logical devices, so that multi-device training (MirroredStrategy) can be
# exercised on a machine without GPUs. Must happen before TensorFlow initialises its devices.
CPU_REPLICAS_ENV = "TLZOO_KERAS_CPU_REPLICAS"

with native_stderr_silenced():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras

    _replicas = os.environ.get(CPU_REPLICAS_ENV, "").strip()
    if _replicas.isdigit() and int(_replicas) > 1:
        _cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * int(_replicas))
    tf.config.list_physical_devices("GPU")

__all__ = ["keras", "native_stderr_silenced", "tf"]
