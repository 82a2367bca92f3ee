"""One meaning of "freeze k layers" for every framework.

A *unit* is a weight layer (convolution or dense) in forward order; a
normalization layer belongs to the unit of the weight layer before it. A spec
may name bigger units instead (``unit_modules``: a transformer's blocks).
``tlzoo describe NAME`` numbers the units from 1.

``--freeze`` accepts:

* ``N``: freeze units 1..N (``0`` or ``none``: nothing);
* ``all``: the whole backbone;
* ``NAME``: units up to and including the one named ``NAME``;
* ``-K``: all but the last K units.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence

from .errors import FreezeSpecError

ALL = "all"


def parse_freeze(value: str | int | None, unit_names: Sequence[str]) -> int:
    """How many leading units ``value`` freezes (``len(unit_names)`` for ``all``)."""
    n = len(unit_names)
    if value is None:
        return 0
    text = str(value).strip()
    if text.lower() in ("none", ""):
        return 0
    if text.lower() == ALL:
        return n
    try:
        number = int(text)
    except ValueError:
        return _by_name(text, unit_names) + 1
    if number < 0:
        if -number > n:
            raise FreezeSpecError(f"--freeze {text}: this backbone has only {n} units; use -1..-{n}")
        return n + number
    if number > n:
        raise FreezeSpecError(
            f"--freeze {text} is out of range: this backbone has {n} units, so use 0..{n}, -1..-{n}, "
            f"'all', or a unit name (see `tlzoo describe`)"
        )
    return number


def parse_unit(value: str | int, unit_names: Sequence[str], option: str = "--tap") -> int:
    """A single unit by 1-based number, negative index or name; returns its 0-based index."""
    n = len(unit_names)
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        return _by_name(text, unit_names, option)
    if 1 <= number <= n:
        return number - 1
    if -n <= number <= -1:
        return n + number
    raise FreezeSpecError(f"{option} {text} is out of range: use 1..{n}, -1..-{n}, or a unit name")


def matches_unit_modules(name: str, patterns: Sequence[str]) -> bool:
    """Whether a module or layer name is one of a spec's ``unit_modules``: each pattern is matched one
    dot-separated part at a time (``encoder.layers.*`` matches ``encoder.layers.encoder_layer_0`` only)."""
    parts = name.split(".")
    for pattern in patterns:
        wanted = pattern.split(".")
        if len(wanted) == len(parts) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted)):
            return True
    return False


def _by_name(text: str, unit_names: Sequence[str], option: str = "--freeze") -> int:
    if text in unit_names:
        return list(unit_names).index(text)
    close = difflib.get_close_matches(text, list(unit_names), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    sample = ", ".join(list(unit_names)[:3])
    raise FreezeSpecError(
        f"{option} {text!r}: no unit of that name.{hint} Units are numbered 1..{len(unit_names)} "
        f"and named like {sample}, ... (see `tlzoo describe`)"
    )
