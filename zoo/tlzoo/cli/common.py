"""What every command shares: consoles, error reporting, plugin loading."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

from ..errors import TlzooError

F = TypeVar("F", bound=Callable[..., Any])

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def debug() -> bool:
    return os.environ.get("TLZOO_DEBUG", "").strip() not in ("", "0")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``Error: message`` on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """User mistakes become a message on stderr and a non-zero exit; TLZOO_DEBUG=1 shows the traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TlzooError as exc:
            if debug():
                raise
            raise fail(escape(str(exc)), exc.exit_code) from None
        except KeyboardInterrupt:
            if debug():
                raise
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def warn_plugins() -> None:
    from ..plugins import warn_broken_plugins
    from ..registry import get_registry

    get_registry()  # calling the hooks is what finds a plugin's errors
    warn_broken_plugins(lambda line: err_console.print(escape(line), style="yellow", soft_wrap=True))


def escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human(n: float) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.1f}{unit}" if unit else f"{int(n)}"
        n /= 1000
    return f"{n:.1f}T"
