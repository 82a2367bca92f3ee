"""Deprecated: moved to ``tlzoo_keras.quiet`` with the Keras framework plugin (tlzoo 0.2).

Kept so that Keras builders written for tlzoo 0.1 (``from tlzoo.frameworks.keras_quiet import keras``)
still load.
"""

from __future__ import annotations

import warnings

warnings.warn(
    "tlzoo.frameworks.keras_quiet moved to tlzoo_keras.quiet (the Keras framework plugin); "
    "import keras directly, or from tlzoo_keras.quiet",
    DeprecationWarning,
    stacklevel=2,
)

from tlzoo_keras.quiet import keras, native_stderr_silenced, tf  # noqa: E402

__all__ = ["keras", "native_stderr_silenced", "tf"]
