"""The limits a user sets through the environment, read and checked in one place: ``TLZOO_STORE_MAX_GB`` (the
decoded-pixel store's cap) and ``TLZOO_MAX_IMAGE_PIXELS`` (the most pixels one image may decode to).

Both take a number, or ``none`` / ``inf`` for no limit (as Pillow's ``MAX_IMAGE_PIXELS = None``);
``TLZOO_STORE_MAX_GB=0`` means no store at all (images are decoded into memory). Anything else (junk, a
negative number, ``nan``, and 0 pixels) is refused in one line naming the variable, by :func:`check`, which
every command calls before it does any work.
"""

from __future__ import annotations

import math
import os

from .errors import UsageError

STORE_MAX_GB = "TLZOO_STORE_MAX_GB"
MAX_IMAGE_PIXELS = "TLZOO_MAX_IMAGE_PIXELS"
DEFAULT_STORE_GB = 20.0
DEFAULT_MAX_PIXELS = 90_000_000
UNLIMITED = ("none", "inf", "infinity", "+inf", "unlimited")


def _number(name: str, what: str, default: float, *, zero: bool) -> float | None:
    """The variable as a finite number >= 0 (> 0 unless ``zero``), ``default`` when unset, None for no limit."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in UNLIMITED:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not {what}: give a number, or none for no limit") from None
    if math.isinf(value) and value > 0:
        return None
    if math.isnan(value) or value < 0 or (value == 0 and not zero):
        least = "0 or more" if zero else "more than 0"
        raise UsageError(f"{name}={raw!r} is not {what}: give a number {least}, or none for no limit")
    return value


def store_cap_bytes() -> int | None:
    """The decoded-pixel store's cap in bytes (``TLZOO_STORE_MAX_GB``, default 20); None: no cap; 0: no store."""
    gb = _number(STORE_MAX_GB, "a size in GiB", DEFAULT_STORE_GB, zero=True)
    cap = None if gb is None else gb * (1 << 30)
    return None if cap is None or math.isinf(cap) else int(cap)


def max_image_pixels() -> int | None:
    """The most pixels one image may decode to (``TLZOO_MAX_IMAGE_PIXELS``, default 90 million); None: no limit."""
    value = _number(MAX_IMAGE_PIXELS, "a number of pixels", DEFAULT_MAX_PIXELS, zero=False)
    return None if value is None else max(1, int(value))


def check() -> None:
    """Refuse a malformed limit now, in one line, before any work (not once per image, deep in a run)."""
    store_cap_bytes()
    max_image_pixels()
