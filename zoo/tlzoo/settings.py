"""Settings declared once, as plain data: type, default, range, help.

A plugin declares the options it takes (``ExporterSpec.options``) as
:class:`Setting` objects; the CLI turns each into a command-line option and
checks given values against it, so core never needs to know a plugin's options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UsageError

TYPES = {"bool": bool, "int": int, "float": float, "str": str, "path": str}


@dataclass(frozen=True)
class Setting:
    """One option. ``type`` is bool, int, float, str or path; ``default`` None means "not given".

    ``choices`` limits a str; ``min``/``max`` bound a number. ``flag`` is the command-line spelling
    (default ``--name-with-dashes``); a bool gets ``--flag/--no-flag``.
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    flag: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"setting {self.name}: type must be one of {', '.join(TYPES)}, not {self.type!r}")
        if not self.name.isidentifier():
            raise ValueError(f"setting name {self.name!r} must be a Python identifier")

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` converted to the setting's type, or a UsageError naming the option."""
        if value is None:
            return None
        kind = TYPES[self.type]
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise UsageError(f"{self.option} must be true or false, got {value!r}")
        if kind in (int, float) and isinstance(value, bool):
            raise UsageError(f"{self.option} must be a number, got {value!r}")
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            raise UsageError(f"{self.option} must be {'a whole number' if kind is int else 'a number' if kind is float else 'text'}, "
                             f"got {value!r}") from None  # fmt: skip
        if self.choices and converted not in self.choices:
            raise UsageError(f"{self.option} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.min is not None and converted < self.min:
            raise UsageError(f"{self.option} must be at least {self.min:g}, got {value!r}")
        if self.max is not None and converted > self.max:
            raise UsageError(f"{self.option} must be at most {self.max:g}, got {value!r}")
        return converted

    def cli_option(self) -> Any:
        """This setting as a command-line option of a Typer command."""
        from typer.core import TyperOption

        name = self.option.lstrip("-")
        if self.type == "bool":
            return TyperOption(param_decls=[f"{self.option}/--no-{name}", self.name], default=bool(self.default),
                               help=self.help, show_default=True)  # fmt: skip
        kind = {"int": int, "float": float}.get(self.type, str)
        return TyperOption(param_decls=[self.option, self.name], type=kind, default=self.default, help=self.help,
                           show_default=self.default is not None)  # fmt: skip


def resolve(settings: tuple[Setting, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Every setting's value: the given one (checked) or its default. Unknown names are refused."""
    known = {s.name: s for s in settings}
    unknown = sorted(set(given) - set(known))
    if unknown:
        names = ", ".join(s.option for s in settings) or "none"
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; the options are: {names}")
    return {name: s.check(given[name]) if name in given else s.default for name, s in known.items()}
