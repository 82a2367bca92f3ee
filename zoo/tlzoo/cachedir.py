"""Where tlzoo keeps what it can recompute: ``$TLZOO_CACHE``, else ``$XDG_CACHE_HOME/tlzoo`` (default
``~/.cache/tlzoo``). Standard library only: plugins compute their folders from it without importing a framework."""

from __future__ import annotations

import os
from pathlib import Path


def tlzoo_cache() -> Path:
    base = os.environ.get("TLZOO_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "tlzoo")
    return Path(base).expanduser()
