"""Settings declared once, as plain data: type, default, range, help, and where they apply.

A :class:`Setting` is the single declaration of one option. The CLI turns it into a command-line option
(:meth:`Setting.cli_option`, :func:`typer_parameters`), config files and API calls are checked against it
(:meth:`Setting.check`), and a strategy string in ``tlzoo compare`` may set the settings marked
``per_strategy``. Training's settings are the fields of :class:`tlzoo.TrainConfig`; a plugin declares the
options it takes (``ExporterSpec.options``) the same way, so core never needs to know a plugin's options.
"""

from __future__ import annotations

import builtins
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

TYPES = {"bool": bool, "int": int, "float": float, "str": str, "path": str, "ints": list}


@dataclass(frozen=True)
class Setting:
    """One option.

    ``type`` is bool, int, float, str, path or ints (a list of whole numbers, written ``256,128`` on the
    command line and ``256+128`` in a compare strategy string). ``default`` None means "not given";
    ``nullable`` False refuses None (a config file's ``epochs: null``).
    ``choices`` limits a str; ``min``/``max`` bound a number (or each number of ints), inclusive unless
    ``min_open``/``max_open``. ``words`` are what a number setting also takes in place of a number
    (``--batch-size auto``). ``flag`` is the command-line spelling (default ``--name-with-dashes``),
    ``short`` a one-letter alias; a bool gets ``--flag/--no-flag``. ``group`` is the help panel it is
    listed under.

    ``applies`` says in words where the setting means something; ``fits(config)`` says whether it fits a
    given configuration: given explicitly where it does not fit, it is refused naming both.
    ``used(config)`` marks a setting every configuration accepts but only some use (said, not refused).
    ``per_strategy`` settings may be set per strategy in compare's strategy strings.
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    flag: str = ""
    short: str = ""
    nullable: bool = True
    min_open: bool = False
    max_open: bool = False
    group: str = ""
    applies: str = ""
    fits: Callable[[Any], bool] | None = None
    used: Callable[[Any], bool] | None = None
    per_strategy: bool = False
    words: tuple[str, ...] = ()

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
            if self.nullable:
                return None
            raise UsageError(f"{self.option} needs a value{self._choice_text()}, got none")
        if self.type == "bool":
            return self._bool(value)
        if self.type == "ints":
            return self._ints(value)
        if self.type in ("int", "float"):
            if isinstance(value, str) and value.strip().lower() in self.words:
                return value.strip().lower()
            return self._bounded(self._number(value))
        if isinstance(value, bool) and {"on", "off"} <= set(self.choices):
            return "on" if value else "off"  # YAML reads a config file's bare on/off as booleans
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise UsageError(f"{self.option} must be text, got {value!r}")
        text = str(value)
        if self.choices and text not in self.choices:
            close = difflib.get_close_matches(text, list(self.choices), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{self.option} {text!r} is not known.{hint} Choose one of: {', '.join(self.choices)}")
        return text

    def cli_text(self, value: Any) -> str:
        """How ``value`` is written on the command line (ints as ``256,128``)."""
        if self.type == "ints":
            return ",".join(str(v) for v in self._ints(value))
        return str(value)

    def cli_args(self, value: Any) -> list[str]:
        """The command-line arguments that give ``value`` (a bool is ``--flag`` or ``--no-flag``)."""
        if self.type == "bool":
            return [self.option if self._bool(value) else f"--no-{self.option.lstrip('-')}"]
        return [self.option, self.cli_text(value)]

    def _choice_text(self) -> str:
        return f" ({', '.join(self.choices)})" if self.choices else ""

    def _bool(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{self.option} must be true or false, got {value!r}")

    def _number(self, value: Any) -> int | float:
        whole = self.type in ("int", "ints")
        want = "a whole number" if whole else "a number"
        want += "".join(f" or {word}" for word in self.words)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UsageError(f"{self.option} must be {want}, got {value!r}")
        try:
            number = float(value) if not whole or isinstance(value, float) else int(str(value).strip())
        except ValueError:
            raise UsageError(f"{self.option} must be {want}, got {value!r}") from None
        if whole:
            if isinstance(number, float) and not number.is_integer():
                raise UsageError(f"{self.option} must be {want}, got {value!r}")
            return int(number)
        return number

    def _bounded(self, number: int | float, shown: Any = None) -> int | float:
        below = self.min is not None and not (number > self.min if self.min_open else number >= self.min)
        above = self.max is not None and not (number < self.max if self.max_open else number <= self.max)
        finite = math.isfinite(number)
        if below or above or not finite:
            shown = number if shown is None else shown
            raise UsageError(f"{self.option} must be {self.range_text()}{'' if finite else ' and finite'}, got {shown!r}")
        return number

    def range_text(self) -> str:
        """The allowed range in words: ``at least 1``, ``positive``, ``in [0, 1)``."""
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        if self.min is not None:
            if self.min == 0:
                return "positive" if self.min_open else "0 or more"
            return f"{'above' if self.min_open else 'at least'} {self.min:g}"
        if self.max is not None:
            return f"{'below' if self.max_open else 'at most'} {self.max:g}"
        return "a number"

    def _ints(self, value: Any) -> list[int]:
        parts = value if isinstance(value, (list, tuple)) else str(value).replace("+", ",").split(",")
        try:
            numbers = [self._number(p.strip() if isinstance(p, str) else p) for p in parts if str(p).strip()]
            if not numbers:
                raise UsageError("empty")
            return [int(self._bounded(n)) for n in numbers]
        except UsageError:
            bound = f" {self.range_text()}" if self.min is not None or self.max is not None else ""
            raise UsageError(f"{self.option} must list whole numbers{bound}, comma separated, got {value!r}") from None

    def cli_option(self) -> Any:
        """This setting as a command-line option of a Typer command."""
        from typer.core import TyperOption

        name = self.option.lstrip("-")
        aliases = [self.short] if self.short else []
        if self.type == "bool":
            return TyperOption(param_decls=[f"{self.option}/--no-{name}", *aliases, self.name], default=bool(self.default),
                               is_flag=True, help=self.help, show_default=True, rich_help_panel=self.group or None)  # fmt: skip
        return TyperOption(param_decls=[self.option, *aliases, self.name], type=self._cli_type(),
                           default=self._cli_default(), help=self.help, show_default=self.default is not None,
                           rich_help_panel=self.group or None)  # fmt: skip

    def _cli_type(self) -> builtins.type:
        return str if self.words else {"int": int, "float": float}.get(self.type, str)  # words: checked by check()

    def _cli_default(self) -> Any:
        return self.cli_text(self.default) if self.type == "ints" and self.default is not None else self.default


def typer_parameters(settings: tuple[Setting, ...]) -> list[Any]:
    """The settings as parameters of a Typer command function's signature (``inspect.Parameter``):
    ``command.__signature__`` built from these makes Typer generate the options."""
    import inspect
    from typing import Annotated, Optional

    import typer

    params = []
    for s in settings:
        kind: Any = bool if s.type == "bool" else s._cli_type()
        if s.type == "bool":
            decls = [f"{s.option}/--no-{s.option.lstrip('-')}"]
        else:
            decls = [s.option]
            kind = Optional[kind] if s.default is None else kind  # noqa: UP045 (Typer reads typing.Optional)
        option = typer.Option(*decls, *([s.short] if s.short else []), help=s.help, rich_help_panel=s.group or None,
                              show_default=s.default is not None)  # fmt: skip
        default = bool(s.default) if s.type == "bool" else s._cli_default()
        params.append(inspect.Parameter(s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                        annotation=Annotated[kind, option]))  # fmt: skip
    return params


def add_options(command: Any, settings: tuple[Setting, ...], *, at: int | None = None) -> None:
    """Give a Typer command function that ends in ``**kwargs`` one option per setting: its signature becomes its
    own parameters with the settings' parameters inserted at position ``at`` (default: after them all), and the
    setting values reach it through ``**kwargs``."""
    import inspect

    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
    at = len(own) if at is None else at
    command.__signature__ = inspect.Signature([*own[:at], *typer_parameters(settings), *own[at:]])


def resolve(settings: tuple[Setting, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Every setting's value: the given one (checked) or its default. Unknown names are refused."""
    known = {s.name: s for s in settings}
    unknown = sorted(set(given) - set(known))
    if unknown:
        names = ", ".join(s.option for s in settings) or "none"
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; the options are: {names}")
    return {name: s.check(given[name]) if name in given else s.default for name, s in known.items()}
