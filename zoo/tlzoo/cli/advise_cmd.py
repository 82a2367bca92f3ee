"""tlzoo advise"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .common import Quiet, console, escape, fail, handle_errors, print_json, print_table, warn_plugins

HELD_POINTS = 1.5


@handle_errors
def advise(
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Image folder or CSV (default: the embedded digits).")] = None,
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones to weigh, e.g. mobilenet_v2,resnet50.")] = "mobilenet_v2",
    budget: Annotated[float, typer.Option(help="Minutes for the measurements (the probe's sample shrinks to fit).")] = 3.0,
    verify: Annotated[bool, typer.Option("--verify", help="Then train the advice and its alternatives with tlzoo compare.")] = False,
    verify_epochs: Annotated[int, typer.Option(help="--verify: epochs for the strategies that train a network.")] = 4,
    out: Annotated[Path, typer.Option("--out", help="--verify: where the compare runs go.")] = Path("runs/advise"),
    json: Annotated[bool, typer.Option("--json", help="Print the advice and its evidence as JSON.")] = False,
    quiet: Quiet = False,
    **shared: Any,
) -> None:
    """Measure where your data sits (size x similarity to the pretraining data) and say what to train."""
    from ..advice import advise as run_advice
    from ..images.datasets import ensure_digits
    from ..images.split import default_data_root
    from ..training.reporter import RichReporter, WarningsReporter
    from .common import err_console

    warn_plugins()
    if verify_epochs < 1:
        raise fail(f"--verify-epochs must be at least 1, got {verify_epochs}", 2)
    values = {s.name: s.check(shared.get(s.name, s.default)) for s in _data_settings()}
    source = Path(data) if data is not None else ensure_digits(default_data_root())
    names = [b.strip() for b in backbones.split(",") if b.strip()]
    reporter = WarningsReporter(err_console) if (json or quiet) else RichReporter(console, err_console)
    advice = run_advice(source, names, budget_minutes=budget, image_size=values["image_size"], seed=values["seed"],
                        weights=values["weights"], test_split=values["test_split"], reporter=reporter,
                        balance=values["balance"])  # fmt: skip
    verified = _verify(advice, source, out, values, verify_epochs, json or quiet) if verify else None
    if json:
        print_json({**advice.to_dict(), **({"verify": verified} if verified is not None else {})})
        return
    if quiet:  # the advice and the command that follows it
        console.print(f"advice: {advice.strategy_spec} on {advice.backbone}", markup=False)
        console.print(f"run: {advice.command}", markup=False)
    else:
        _show(advice)
    if verified is not None:
        _show_verified(verified)


def _data_settings() -> tuple[Any, ...]:
    import dataclasses

    from ..advice import data_settings
    from ..training.config import SETTINGS_BY_NAME

    return tuple(dataclasses.replace(s, help=SETTINGS_BY_NAME[s.name].help, group="Data (as tlzoo compare)")
                 for s in data_settings())  # fmt: skip


def _show(advice: Any) -> None:
    d = advice.dataset
    multilabel = bool(d.get("multilabel"))
    if multilabel:
        console.print(f"data: {d['images']} images with {d['classes']} labels (several an image), median "
                      f"{d['median_per_class']:g} positives per label (fewest {d['min_per_class']}, imbalance "
                      f"{d['imbalance']:g}x); probes scored by mean average precision", markup=False)  # fmt: skip
    else:
        console.print(f"data: {d['images']} images in {d['classes']} classes, median {d['median_per_class']:g} per class "
                      f"(fewest {d['min_per_class']}, imbalance {d['imbalance']:g}x)", markup=False)  # fmt: skip
    for e in advice.evidence:
        table = Table(title=escape(f"{e.backbone} ({e.weights}, {e.image_size} px): linear probe, {e.sample_per_class} "
                                   f"images per class, {e.seconds:.0f} s"), title_justify="left")  # fmt: skip
        for col in ("depth", "unit", "probe mAP" if multilabel else "probe accuracy"):
            table.add_column(col, justify="left" if col == "unit" else "right")
        for p in e.probes:
            table.add_row(f"{p.depth:.0%}", escape(p.tap if p.unit is None else f"{p.unit} {p.tap}"),
                          f"{p.accuracy:.1%} ± {p.std:.1%}")  # fmt: skip
        print_table(table)
        extra = [f"half the sample {e.half_sample_accuracy:.1%}"]
        if e.random_accuracy is not None:
            extra.insert(0, f"random weights {e.random_accuracy:.1%}")
        console.print("  final features with " + ", ".join(extra), markup=False)
    console.print(f"placement: {advice.size} data, {advice.similarity} {'to' if advice.similarity == 'similar' else 'from'} the pretraining data", markup=False)
    console.print(f"[bold]advice: {escape(advice.strategy_spec)}[/] on {escape(advice.backbone)}")
    for reason in advice.reasons:
        console.print(f"  - {reason}", markup=False)
    console.print(f"run: {advice.command}", markup=False)
    if advice.alternatives:
        console.print(f"worth comparing: {', '.join(advice.alternatives)} (tlzoo advise --verify trains them)", markup=False)
    console.print(f"measured in {advice.seconds:.0f} s", markup=False)


def _verify(advice: Any, source: Path, out: Path, values: dict[str, Any], epochs: int, quiet: bool) -> dict[str, Any]:
    """Train the advice and its alternatives as one tlzoo compare; say whether the advice held."""
    from ..comparison import common_args, compare, ranked

    strategies = ",".join(dict.fromkeys([advice.strategy_spec, *advice.alternatives]))
    common = common_args(epochs=epochs, **{k: v for k, v in values.items() if v is not None})
    if not quiet:
        console.print(f"verifying: tlzoo compare --strategies {strategies} ({epochs} epochs) ...", markup=False)
    rows = ranked(compare(source, [advice.backbone], strategies, out_dir=out, budget_minutes=None, common=common,
                          onnx=False))  # fmt: skip
    done = [r for r in rows if r.get("status") == "ok"]
    if not done:
        raise fail(f"every verification run failed; see {out / 'leaderboard.md'}", 1)
    # a multi-label advice is verified by what it was measured with: mean average precision
    score = "mean_average_precision" if advice.dataset.get("multilabel") else "accuracy"
    best = max(done, key=lambda r: r[score])
    ours = next((r for r in done if r["strategy"] == advice.strategy_spec), None)
    gap = None if ours is None else round((best[score] - ours[score]) * 100, 2)
    return {"rows": [{k: r.get(k) for k in ("strategy", "status", "accuracy", "train_s", "run_dir", "error")}
                     | {"score": r.get(score)} for r in rows],
            "best": best["strategy"], "advised_accuracy": None if ours is None else ours[score],
            "best_accuracy": best[score], "score": score.replace("_", " "), "gap_points": gap, "held": gap is not None and gap <= HELD_POINTS}  # fmt: skip


def _show_verified(verified: dict[str, Any]) -> None:
    for row in verified["rows"]:
        result = (f"test {verified.get('score', 'accuracy')} {row['score']:.4f}, {row['train_s']:.0f} s"
                  if row["status"] == "ok" else row.get("error"))  # fmt: skip
        console.print(f"  {row['strategy']}: {result}", markup=False)
    if verified["gap_points"] is None:
        console.print("the advised run failed; see the leaderboard", markup=False)
    elif verified["held"]:
        console.print(f"the advice held: {verified['gap_points']:.1f} points from the best ({verified['best']})", markup=False)
    else:
        console.print(f"the advice missed: {verified['best']} was {verified['gap_points']:.1f} points better", markup=False)


def _add_data_options() -> None:
    """The data options advise shares with tlzoo compare (declared once, in TrainConfig), after its own."""
    from ..settings import add_options

    add_options(advise, _data_settings())


_add_data_options()
