"""tlzoo describe"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..registry import get_registry
from ..specs import BackboneSpec, UnitSpec, WeightsSpec
from ..weights import cached_path, is_cached, recorded_sha256
from .common import Quiet, console, escape, handle_errors, human, print_json, print_table, warn_plugins


@handle_errors
def describe(
    name: Annotated[str, typer.Argument(help="Backbone name or id, e.g. vgg16 or keras/vgg16.")],
    framework: Annotated[Optional[str], typer.Option(help="The framework, when the short name is in several (torch, keras).")] = None,
    build: Annotated[bool, typer.Option("--build", help="Build the model, read the units off it and check the spec against it.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    quiet: Quiet = False,
) -> None:
    """Show a backbone's numbered freeze units, preprocessing and weights (-q: the summary, no units table)."""
    warn_plugins()
    spec = get_registry().resolve(name, framework)
    units = list(spec.units)
    checked: dict[str, int] = {}
    if build or not units:
        from ..backbone import get_backbone

        built = get_backbone(spec, pretrained=False)  # checks the spec against the model it builds
        units = [UnitSpec(u.name, u.kind, u.params) for u in built.units]
        checked = {"units": len(units), "num_params": built.num_params, "feature_dim": spec.feature_dim}
    if json:
        data = spec.to_dict()
        data["id"] = spec.id
        data["plugin"] = get_registry().provider(spec.id)
        if checked:
            data["built"] = checked
        data["units"] = [{"index": i, "name": u.name, "kind": u.kind, "params": u.params} for i, u in enumerate(units, 1)]
        print_json(data)
        return
    _print_summary(spec, len(units))
    if quiet:
        return
    table = Table(title="freeze units (--freeze N freezes 1..N; --tap N takes unit N's pooled output)", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("unit")
    table.add_column("kind")
    table.add_column("params", justify="right")
    for i, u in enumerate(units, 1):
        table.add_row(str(i), u.name, u.kind, f"{u.params:,}")
    print_table(table)


def _print_summary(spec: BackboneSpec, n_units: int) -> None:
    p = spec.preprocessing
    console.print(f"[bold]{escape(spec.id)}[/]  {escape(spec.description)}")
    console.print(f"  builder      {spec.builder}   ({spec.source})")
    multiple = f", sizes a multiple of {spec.input_multiple}" if spec.input_multiple > 1 else ""
    console.print(f"  input        {spec.input_size[0]}x{spec.input_size[1]} RGB (minimum {spec.min_input_size}{multiple})")
    console.print(f"  features     {spec.feature_dim} (the backbone's pooled output)")
    console.print(f"  parameters   {spec.num_params:,} ({human(spec.num_params)}) in {n_units} freeze units")
    console.print(
        f"  preprocess   mode={p.mode}: {p.channel_order}, values 0..{p.value_range:g}, "
        f"mean={_fmt(p.mean)}, std={_fmt(p.std)}; resize {p.resize_text()} without weights (--resize overrides)"
    )
    console.print(f"  license      {spec.license}")
    for w in spec.weights:
        where = cached_path(spec, w)
        state = f"on disk: {where}" if is_cached(spec, w) else f"not on disk (would be {where})"
        metrics = ", ".join(f"{k} {v:g}" for k, v in w.metrics.items())
        about = "; ".join(x for x in (f"{w.dataset} {metrics}".strip(), _tag_transform(spec, w),
                                      f"license {w.license}" if w.license else "", _hash_text(spec, w)) if x)  # fmt: skip
        console.print(f"  weights      {w.tag}: {w.file_name} ({about}) {state}", markup=False)
    if not spec.weights:
        console.print("  weights      none (random initialisation only)")


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _tag_transform(spec: BackboneSpec, weights: WeightsSpec) -> str:
    prep, size = spec.preprocessing_for(weights), spec.input_size_for(weights)
    text = f"resize {prep.resize_text()}"
    if size != spec.input_size:
        text += f" at {size[0]}x{size[1]}"
    if (prep.mean, prep.std) != (spec.preprocessing.mean, spec.preprocessing.std):
        text += f", mean={_fmt(prep.mean)} std={_fmt(prep.std)}"
    return text


def _hash_text(spec: BackboneSpec, weights: WeightsSpec) -> str:
    if weights.file_hash:
        return f"{weights.hash_algorithm} published"
    known = recorded_sha256(spec, weights)
    return (f"no published hash: sha256 {known[:16]}... recorded at first use, checked at every use" if known else
            "no published hash: its sha256 is recorded at first use and checked at every use after")  # fmt: skip
