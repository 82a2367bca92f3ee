"""Deprecated: ``tlzoo.training.heads`` moved to ``tlzoo.heads``, beside the backbone (a model's parts are kept apart
from the loop that trains them). Kept so that framework plugins written against the old path still import; it
warns once."""

from __future__ import annotations

import warnings

warnings.warn(f"{__name__} moved to tlzoo.heads; import it from there", DeprecationWarning, stacklevel=2)

from tlzoo.heads import *  # noqa: E402,F401,F403
