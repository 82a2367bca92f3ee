"""The ``tlzoo`` Typer application. Commands import heavy libraries inside their bodies."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from . import advise_cmd, compare_cmd, datasets_cmd, describe, evaluate, export, list_backbones, plugins_cmd, predict, spec_cmd, train, weights_cmd

app = typer.Typer(
    name="tlzoo",
    help="Transfer-learning backbone zoo: torchvision and Keras backbones, one interface.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"tlzoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    plugin: Annotated[
        Optional[list[str]],
        typer.Option("--plugin", "-p", help="Load this importable module as a plugin (repeatable).", envvar=None),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print tlzoo's version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the frameworks' own start-up lines.")] = False,
) -> None:
    if verbose:
        import os

        os.environ["TLZOO_VERBOSE"] = "1"
    if plugin:
        from ..plugins import add_plugin_modules

        add_plugin_modules(plugin)


app.command("list-backbones")(list_backbones.list_backbones)
app.command("describe")(describe.describe)
app.command("plugins")(plugins_cmd.plugins)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("predict")(predict.predict)
app.command("compare")(compare_cmd.compare)
app.command("advise")(advise_cmd.advise)
app.command("datasets")(datasets_cmd.datasets)
app.command("spec")(spec_cmd.spec)
app.add_typer(weights_cmd.app, name="weights")


def main() -> None:
    import os
    import signal
    import sys

    # SIGTERM (kill, timeout, a job scheduler) ends a run as Ctrl-C does: an unstarted run leaves nothing
    # behind, a started one keeps its last epoch for --resume.
    signal.signal(signal.SIGTERM, _interrupt)
    _say_warnings_as_tlzoo()
    try:
        from ..allocator import tune

        tune()  # before any framework allocates: see tlzoo.allocator
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
    prints them). A decoder's warning about a file is said for every file, with its name (tlzoo.decode)."""
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

    group = typer.main.get_command(app)
    group.add_command(export.command())  # type: ignore[attr-defined]
    return group
