"""tlzoo export: one subcommand per installed export format, its options declared by the exporter plugin.

``tlzoo export onnx RUN --opset 17`` is built from the ``onnx`` exporter's :class:`tlzoo.settings.Setting`
list when ``export`` is invoked, so core declares no format's options and the registry is read only then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ..errors import UsageError
from .common import console, err_console, escape, handle_errors, print_json, print_table, warn_plugins


def _list_formats() -> None:
    from ..registry import get_registry

    table = Table(title="export formats", title_justify="left")
    for col in ("format", "suffix", "plugin", "description"):
        table.add_column(col)
    registry = get_registry()
    for spec in registry.exporters.values():
        table.add_row(spec.name, spec.file_suffix, registry.owners.get(f"exporter {spec.name}", ""), spec.description)
    print_table(table)


@handle_errors
def _run_export(format: str, run: Path, out: Path | None, json: bool, options: dict[str, Any], quiet: bool = False) -> None:
    from ..plugins import load_object
    from ..registry import get_registry
    from ..settings import resolve
    from ..runs.trained import load_run

    warn_plugins()
    spec = get_registry().exporter(format)
    values = resolve(spec.options, {k: v for k, v in options.items() if v is not None})
    trained = load_run(run)
    exporter = load_object(spec.exporter, f"exporter {spec.name}")
    if quiet:
        report = exporter(trained, out, values)
    else:
        with console.status(f"exporting {run} to {format}"):
            report = exporter(trained, out, values)
    if json:
        print_json({k: v for k, v in report.items() if k not in ("summary", "warnings")})
        return
    for line in [str(report["path"])] if quiet else report.get("summary") or [f"wrote {report['path']}"]:
        console.print(escape(str(line)))
    for line in report.get("warnings") or []:
        err_console.print(f"warning: {line}", style="yellow", markup=False, highlight=False)


def _format_command(spec: Any) -> TyperCommand:
    def callback(run: str, out: str | None, json: bool, quiet: bool, **options: Any) -> None:
        _run_export(spec.name, Path(run), Path(out) if out else None, json, options, quiet)

    default = f"RUN/{spec.default_file}" if spec.default_file else "the exporter's default in RUN"
    params = [
        TyperArgument(param_decls=["run"], type=str, required=True, metavar="RUN", help="A run directory from tlzoo train."),
        TyperOption(param_decls=["--out", "-o", "out"], type=str, default=None, help=f"Output file (default: {default})."),
        *(setting.cli_option() for setting in spec.options),
        TyperOption(param_decls=["--json", "json"], is_flag=True, default=False, help="Print the report as JSON."),
        TyperOption(param_decls=["--quiet", "-q", "quiet"], is_flag=True, default=False,
                    help="The written file's path alone: no progress or summary."),
    ]
    return TyperCommand(spec.name, callback=callback, params=params, help=spec.description,
                        short_help=spec.description.split(":")[0][:60])  # fmt: skip


class ExportGroup(TyperGroup):
    """``tlzoo export FORMAT RUN``: the formats are the installed exporter plugins, loaded when needed."""

    def list_commands(self, ctx: Any) -> list[str]:
        from ..registry import get_registry

        return sorted(get_registry().exporters)

    def get_command(self, ctx: Any, name: str) -> Any:
        from ..registry import get_registry

        spec = get_registry().exporters.get(name)
        return _format_command(spec) if spec is not None else None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            _unknown(name)  # one clear line, like every other bad input
        return super().resolve_command(ctx, args)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["tlzoo.export.format_given"] = any(not a.startswith("-") for a in args)
        return super().parse_args(ctx, args)  # type: ignore[no-any-return]

    def invoke(self, ctx: Any) -> Any:
        if ctx.params.get("list_formats"):
            _list_formats()
            return None
        if not ctx.meta.get("tlzoo.export.format_given"):
            handle_errors(_usage)()
        return super().invoke(ctx)


@handle_errors
def _unknown(name: str) -> None:
    from ..registry import get_registry

    get_registry().exporter(name)  # raises UsageError with suggestions and the known formats


def _usage() -> None:
    raise UsageError("usage: tlzoo export FORMAT RUN_DIR (tlzoo export --list shows the formats)")


def command() -> TyperGroup:
    return ExportGroup(
        name="export",
        invoke_without_command=True,
        params=[TyperOption(param_decls=["--list", "list_formats"], is_flag=True, default=False,
                            help="List the export formats.")],  # fmt: skip
        help="Export a trained run to a deployable file, checked against the source model. "
        "Each format's options: tlzoo export FORMAT --help.",
        short_help="Export a trained run to a deployable file (tlzoo export FORMAT --help).",
    )
