"""``tlzoo``'s entry point: signals and warnings first, then the commands (:mod:`tlzoo.cli.commands`).

Nothing heavy is imported at module level, so a Ctrl-C or SIGTERM in the first moments is handled too.
"""

from __future__ import annotations

from typing import Any


def main() -> None:
    import os
    import signal
    import sys

    # SIGTERM (kill, timeout, a job scheduler) ends a run as Ctrl-C does: an unstarted run leaves nothing
    # behind, a started one keeps its last epoch for --resume.
    signal.signal(signal.SIGTERM, _interrupt)
    # A file name that is not UTF-8 is shown with backslash escapes wherever one reaches the terminal, never a crash.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    _say_warnings_as_tlzoo()
    try:
        from ..allocator import tune
        from ..collector import own_process

        tune()  # before any framework allocates: see tlzoo.allocator
        own_process()  # a framework's import is frozen once made: see tlzoo.collector
        if os.environ.get("TLZOO_VERBOSE", "").strip() in ("", "0"):
            # TensorFlow's C++ start-up lines (including a cuInit error on machines without a GPU) say nothing
            # a tlzoo user can act on; TLZOO_VERBOSE=1 shows them.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        cli().main(prog_name="tlzoo")
    except KeyboardInterrupt:  # before a command's own handling starts (imports, option parsing)
        if os.environ.get("TLZOO_DEBUG", "").strip() not in ("", "0"):
            raise
        print("Error: interrupted", file=sys.stderr)
        sys.exit(130)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _say_warnings_as_tlzoo() -> None:
    """Library warnings as one ``warning:`` line each, without a site-packages path (TLZOO_DEBUG=1: as Python
    prints them). A decoder's warning about a file is said for every file, with its name (tlzoo.images.decode)."""
    import os
    import sys
    import warnings

    if os.environ.get("TLZOO_DEBUG", "").strip() not in ("", "0"):
        return
    warnings.filterwarnings("always", module=r"PIL\.")

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show


def cli() -> Any:
    """The click command behind ``tlzoo``: the Typer app plus ``export``, whose subcommands come from the
    exporter plugins."""
    import typer.main

    from .commands import app, export

    group = typer.main.get_command(app)
    group.add_command(export.command())  # type: ignore[attr-defined]
    return group


def __getattr__(name: str) -> Any:
    if name == "app":  # the Typer app, imported on use: main() must start before typer, rich and the commands load
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
