"""The ``tlzoo`` Typer application and its commands. Commands import heavy libraries inside their bodies."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from . import advise_cmd, cache_cmd, compare_cmd, datasets_cmd, describe, evaluate, export, list_backbones, plugins_cmd, predict, spec_cmd, train, weights_cmd

app = typer.Typer(
    name="tlzoo",
    help="Transfer-learning backbone zoo: torchvision, Keras and timm backbones behind one interface; feature "
    "extraction, fine-tuning, two-stage and scratch training; checked ONNX export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


# The commands that decode images or use the store: the environment's limits are checked before they start.
DECODES = {"train", "compare", "advise", "predict", "evaluate", "export", "cache"}


def _version(value: bool) -> None:
    if value:
        from ..version import __version__

        typer.echo(f"tlzoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    plugin: Annotated[
        Optional[list[str]],
        typer.Option("--plugin", "-p", help="Load this importable module as a plugin (repeatable).", envvar=None),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print tlzoo's version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the frameworks' own start-up lines.")] = False,
) -> None:
    if ctx.invoked_subcommand in DECODES:
        from ..errors import UsageError
        from ..limits import check
        from .common import fail

        try:
            check()  # a malformed TLZOO_STORE_MAX_GB or TLZOO_MAX_IMAGE_PIXELS: one line now, not per image later
        except UsageError as exc:
            raise fail(str(exc), exc.exit_code) from None
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
app.add_typer(cache_cmd.app, name="cache")
