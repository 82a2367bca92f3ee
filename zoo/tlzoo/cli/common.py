"""What every command shares: consoles, error reporting, plugin loading."""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import typer
from rich.console import Console

from ..errors import TlzooError

F = TypeVar("F", bound=Callable[..., Any])

# The options predict and evaluate share: --provider for an exported file, --device and --decoder for a run directory.
ProviderOption = Annotated[str, typer.Option(help="Exported files: auto | cpu | cuda | tensorrt")]
DeviceOption = Annotated[str, typer.Option(help="Run directories: auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps")]
DecoderOption = Annotated[str, typer.Option(help="Run directories on a CUDA device: auto (JPEGs by the framework's GPU decoder, "
                                                 "nvJPEG for torch; else Pillow) | cpu (Pillow) | gpu (refused where there is none).")]

# One meaning on every command: what the command exists to produce (its result, and errors and warnings on
# stderr), without progress, notes and tables.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="The result alone: no progress, notes or tables.")]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_table(table: Any) -> None:
    """A table in a terminal fits the terminal; piped or redirected, it is printed at its natural width, whole
    (rich would cut it to 80 columns with ``…``)."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update(width=100_000), table).maximum
    width = console.width
    console.width = max(natural, width)  # print(width=) is capped at the console's own width
    try:
        console.print(table)
    finally:
        console.width = width


def debug() -> bool:
    return os.environ.get("TLZOO_DEBUG", "").strip() not in ("", "0")


MESSAGE_LIMIT = 1000  # characters: a value pasted into an option or a config file is echoed, not flooded


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``Error: message`` on stderr, as one line of at most :data:`MESSAGE_LIMIT` characters (a newline
    inside a value the user gave does not start another), and return the Exit to raise."""
    line = " ".join(message.split())
    if len(line) > MESSAGE_LIMIT:
        line = line[: MESSAGE_LIMIT - 3].rstrip("\\") + "..."  # never end on an escape's backslash
    err_console.print(f"[bold red]Error:[/] {line}", markup=True, highlight=False, soft_wrap=True)
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
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # what the user's machine caused, or a bug: one line either way
            if debug():
                raise
            message, code = describe_failure(exc)
            raise fail(escape(message), code) from None

    return wrapper  # type: ignore[return-value]


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """One line for an exception that is not a TlzooError: the machine's faults named, the rest called a bug."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        if exc.errno in _DISK_FULL:
            return f"the disk is full{where}: free some space or write elsewhere (--out-dir, TLZOO_CACHE)", 1
        if exc.errno in _NOT_WRITABLE:
            return f"not allowed to write{where}: {exc.strerror}. Choose a writable folder (--out-dir, TLZOO_CACHE)", 1
        if isinstance(exc, FileNotFoundError):
            return f"no such file or folder{where}", 1
        return f"{exc.strerror or exc}{where}", 1
    if isinstance(exc, MemoryError):
        return "out of memory: lower --batch-size or --image-size", 1
    text = " ".join(str(exc).split())
    if "inline_container" in text or "PytorchStreamWriter" in text or "file write failed" in text:
        return "writing a torch file failed: the disk is full or not writable (check --out-dir and free space)", 1
    if "CUDA out of memory" in text or "OutOfMemoryError" in type(exc).__name__:
        return "the GPU ran out of memory: lower --batch-size or --image-size", 1
    return (
        f"unexpected {type(exc).__name__}: {text[:300]}. This is a bug in tlzoo or a plugin; "
        f"TLZOO_DEBUG=1 shows the traceback to report", 1
    )


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


def check_out(out: Path | None, model: Path, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse a ``--out`` before any work: wrong suffix, a folder, a folder that does not exist, or one of the
    run directory's own files (which it would silently replace)."""
    from ..errors import UsageError
    from ..runs.runfiles import RUN_FILES

    if out is None:
        return
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name a file in it, e.g. {out / ('predictions' + suffixes[0])}")
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"--out {out}: write {what} to a {' or '.join(suffixes)} file")
    if not out.absolute().parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.absolute().parent} does not exist")
    if model.is_dir() and out.absolute().parent.resolve() == model.resolve() and out.name in RUN_FILES:
        raise UsageError(f"--out {out} would replace the run's own {out.name}; write elsewhere")
