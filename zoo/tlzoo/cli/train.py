"""tlzoo train"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import Quiet, console, debug, err_console, escape, fail, handle_errors, print_json, warn_plugins

@handle_errors
def train(
    ctx: typer.Context,
    nproc: Annotated[int, typer.Option(help="Data-parallel training in this many processes (launched with torchrun).",
                                       rich_help_panel="Run")] = 1,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Same as --augment none.", rich_help_panel="Data")] = False,
    exist_ok: Annotated[bool, typer.Option(help="Reuse runs/NAME instead of numbering a new one.", rich_help_panel="Run")] = False,
    config: Annotated[Optional[Path], typer.Option(help="A run's config.yaml; options given here override it.",
                                                   rich_help_panel="Run")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue an interrupted run directory.", rich_help_panel="Run")] = None,
    quiet: Quiet = False,
    json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    **settings: Any,
) -> None:
    """Train a classifier on your images with a pretrained backbone."""
    from ..errors import UsageError
    from ..training.config import TrainConfig
    from ..training.reporter import RichReporter, WarningsReporter
    from ..training.run import train as run_training

    from ..distributed import world

    job = world()
    if job.main:
        warn_plugins()
    values = dict(settings)
    given = {k for k in values if _given(ctx, k)}
    if no_augment:
        if "augment" in given and str(values["augment"]).strip().lower() not in ("none", "off", ""):
            raise UsageError(f"--no-augment contradicts --augment {values['augment']}: give one of them")
        values["augment"] = "none"
        given.add("augment")
    overrides: dict[str, Any] = {}
    if resume is not None:
        if config is not None:
            raise UsageError("--resume takes the run's own config.yaml; leave out --config")
        overrides = {k: values[k] for k in given}
        cfg = TrainConfig()
    elif config is not None:
        loaded, file_given = TrainConfig.load_given(config)
        cfg = TrainConfig(**{**loaded.to_dict(), **{k: values[k] for k in given}})
        given |= file_given
    else:
        cfg = TrainConfig(**values)
    device = str(values["device"])
    devices = [d for d in device.split(",") if d.strip()]
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    if (len(devices) > 1 or nproc > 1) and not job.distributed and resume is None:
        from ..registry import get_registry

        registry = get_registry()
        spec = registry.resolve(cfg.backbone, cfg.framework)
        if registry.framework(spec.framework).in_process_multi_device:
            if nproc > 1:
                raise UsageError(f"--nproc {nproc}: {spec.id} does not train across processes; give its devices "
                                 f"with --device 0,1 (one process, one replica per GPU), or use a backbone "
                                 f"whose framework trains one process per device")  # fmt: skip
            devices = devices[:1]  # the engine spreads this one process over the devices itself
    if (nproc > 1 or len(devices) > 1) and not job.distributed:
        if nproc > 1 and len(devices) > 1 and nproc != len(devices):
            raise UsageError(f"--nproc {nproc} and --device {device} disagree: one process per listed GPU")
        if resume is not None:
            from ..training.run import resume_config

            resume_config(resume, {k: v for k, v in overrides.items() if k != "device"})
        else:
            TrainConfig(**{**cfg.to_dict(), "device": devices[0] if devices else "auto"}).checked(given)
        raise typer.Exit(_launch(max(nproc, len(devices))))
    reporter = WarningsReporter(err_console) if (quiet or json) else RichReporter(console, err_console)
    result = run_training(cfg, reporter, resume=resume, exist_ok=exist_ok, given=given, overrides=overrides)
    if not job.main:
        return
    if json:
        print_json(result.summary)
        return
    m = result.metrics
    k = next((key for key in m if key.startswith("top") and key.endswith("_accuracy")), None)
    topk = f"{k.replace('_', ' ')} {m[k]:.4f}, " if k else ""
    summary = result.summary
    frozen = (f", {summary['frozen_units']}/{summary['units']} units frozen"
              if summary["strategy"] == "fine-tune" else "")  # fmt: skip
    scores = (f"mean average precision [bold]{m['mean_average_precision']:.4f}[/], micro F1 {m['micro_f1']:.4f}, "
              f"subset accuracy {m['subset_accuracy']:.4f}, log loss {m['log_loss']:.4f}"
              if "per_label" in m else
              f"accuracy [bold]{m['accuracy']:.4f}[/], {topk}log loss {m['log_loss']:.4f}, macro F1 {m['macro_f1']:.4f}")
    console.print(
        f"[bold]{escape(summary['backbone'])} {summary['strategy']}[/]{frozen}: {m['split']} {scores} "
        f"on {m['n']} images; {m['train_seconds']:.1f} s"
        + (f"; feature cache {m['feature_cache']}" if "feature_cache" in m else "")
    )
    console.print(f"run directory: {result.run_dir}", markup=False)


def _add_setting_options() -> None:
    """One option per training setting (tlzoo.TrainConfig, declared once there), after the context."""
    from ..settings import add_options
    from ..training.config import TRAIN_SETTINGS

    add_options(train, TRAIN_SETTINGS, at=1)


_add_setting_options()


def _launch(nproc: int) -> int:
    """Run this same command as ``nproc`` data-parallel processes under torch's elastic launcher."""
    import os
    import subprocess
    import sys

    from ..distributed import launch_command
    from ..images.decode import available_cores

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            argv.append(arg)
    err_console.print(f"launching {nproc} processes with torchrun (torch.distributed.run --standalone)", markup=False)
    # Each process gets its share of the cores for its math library (torchrun would set 1 and print a banner
    # saying so); an OMP_NUM_THREADS the user set is kept.
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    launcher = subprocess.Popen(launch_command(nproc, argv), stderr=subprocess.PIPE, text=True, env=env)
    assert launcher.stderr is not None
    hiding = False
    for line in launcher.stderr:  # the ranks' own lines pass through; the launcher's traceback does not
        hiding = hiding or (line.startswith("Traceback (most recent call last)") and not debug())
        if not hiding:
            sys.stderr.write(line)
    code = launcher.wait()
    if code != 0:
        raise fail(f"one of the {nproc} training processes failed (torchrun exit code {code}); a run that finished "
                   f"an epoch stays resumable: tlzoo train --resume RUN_DIR --nproc {nproc}", 1)  # fmt: skip
    return 0


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # an enum of Click's (or Typer's vendored Click)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
