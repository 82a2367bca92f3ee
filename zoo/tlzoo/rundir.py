"""Deprecated: ``tlzoo.rundir`` was split: its file helpers (atomic writes, temporaries, fault points) moved to
``tlzoo.files``, ``new_run_dir`` to ``tlzoo.runs.rundir`` and ``package_versions`` to ``tlzoo.version``. Kept so
that code written against the old path still imports; it warns once."""

from __future__ import annotations

import warnings

warnings.warn(f"{__name__} moved to tlzoo.files; import it from there", DeprecationWarning, stacklevel=2)

from tlzoo.files import *  # noqa: E402,F401,F403
from tlzoo.runs.rundir import new_run_dir  # noqa: E402,F401
from tlzoo.version import package_versions  # noqa: E402,F401
