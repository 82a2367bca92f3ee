"""Deprecated: ``tlzoo.decode`` moved to ``tlzoo.images.decode``, in the input path's package. Kept so that code
written against the old path (``tlzoo.decode.load_image``) still imports; it warns once."""

from __future__ import annotations

import warnings

warnings.warn(f"{__name__} moved to tlzoo.images.decode; import it from there", DeprecationWarning, stacklevel=2)

from tlzoo.images.decode import *  # noqa: E402,F401,F403
