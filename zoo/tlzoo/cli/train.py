"""tlzoo train"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import console, debug, err_console, escape, fail, handle_errors, print_json, warn_plugins

STRATEGY_HELP = "feature-extract | fine-tune | two-stage | scratch"
HEAD_HELP = "softmax | logreg-ovr | linear-svm | mlp (feature-extract)"


@handle_errors
def train(
    ctx: typer.Context,
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="Backbone name or id (tlzoo list-backbones).")] = "mobilenet_v2",
    framework: Annotated[Optional[str], typer.Option(help="'torch' or 'keras' when the short name is in both.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Image folder (one sub-folder per class) or a path,label CSV. Default: the embedded digits.")] = None,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=STRATEGY_HELP + " (default: feature-extract; fine-tune when --freeze is given)")] = "feature-extract",
    freeze: Annotated[Optional[str], typer.Option(help="fine-tune: N | NAME | all | -K units frozen (tlzoo describe); selects fine-tune. Default: half.")] = None,
    head: Annotated[str, typer.Option(help=HEAD_HELP)] = "softmax",
    tap: Annotated[Optional[str], typer.Option(help="Use an earlier unit's pooled output (number or name) as the features.")] = None,
    weights: Annotated[str, typer.Option(help="auto (ImageNet, preferring what is on disk), a tag, a file, or 'none'.")] = "auto",
    epochs: Annotated[int, typer.Option(help="Epochs (two-stage: of stage 2; mlp head: max epochs).")] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate of the head.")] = 1e-3,
    backbone_lr_mult: Annotated[float, typer.Option(help="Backbone learning rate = lr x this.")] = 0.1,
    optimizer: Annotated[str, typer.Option(help="sgd | adam | adamw")] = "adamw",
    schedule: Annotated[str, typer.Option(help="cosine | step | none")] = "cosine",
    patience: Annotated[int, typer.Option(help="Early stopping after this many epochs without a better val loss (0: off).")] = 5,
    stage1_epochs: Annotated[int, typer.Option(help="two-stage: epochs of the head-only stage.")] = 3,
    unfreeze: Annotated[str, typer.Option(help="two-stage: 'all' or the number of final units to unfreeze in stage 2.")] = "all",
    hidden: Annotated[str, typer.Option(help="mlp head: hidden layer sizes, comma separated.")] = "256",
    dropout: Annotated[float, typer.Option(help="Dropout before each dense layer of the head.")] = 0.2,
    c: Annotated[Optional[float], typer.Option("--C", help="Inverse regularization of the scikit-learn heads (default: chosen on validation data).")] = None,
    augment: Annotated[str, typer.Option(help="auto | none | flip,crop (auto: on for fine-tune/two-stage/scratch).")] = "auto",
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Same as --augment none.")] = False,
    image_size: Annotated[Optional[int], typer.Option(help="Resize images to this size (default: the backbone's).")] = None,
    val: Annotated[Optional[str], typer.Option(help="Validation folder (default: a stratified split of --data).")] = None,
    test: Annotated[Optional[str], typer.Option(help="Test folder (default: none, or --test-split).")] = None,
    val_split: Annotated[float, typer.Option(help="Share of --data held out for validation.")] = 0.2,
    test_split: Annotated[float, typer.Option(help="Share of --data held out for testing.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for splits, initialisation and shuffling.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:1 | mps | 0,1 (one process per GPU, torch)")] = "auto",
    nproc: Annotated[int, typer.Option(help="Data-parallel training in this many processes (torch; launched with torchrun).")] = 1,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes (torch).")] = 0,
    strict: Annotated[bool, typer.Option(help="Stop on an unreadable image instead of skipping it.")] = False,
    cache: Annotated[bool, typer.Option(help="Cache bottleneck features (feature-extract).")] = True,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log every epoch for TensorBoard (RUN/tensorboard; needs the tensorboard package).")] = False,
    name: Annotated[Optional[str], typer.Option(help="Run name (default: BACKBONE-STRATEGY).")] = None,
    out_dir: Annotated[str, typer.Option(help="Where run directories go.")] = "runs",
    exist_ok: Annotated[bool, typer.Option(help="Reuse runs/NAME instead of numbering a new one.")] = False,
    config: Annotated[Optional[Path], typer.Option(help="A run's config.yaml; options given here override it.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue an interrupted run directory.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final summary.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
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
    values: dict[str, Any] = {
        "backbone": backbone, "framework": framework, "data": data, "strategy": strategy, "freeze": freeze,
        "head": head, "tap": tap, "weights": weights, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "backbone_lr_mult": backbone_lr_mult, "optimizer": optimizer, "schedule": schedule, "patience": patience,
        "stage1_epochs": stage1_epochs, "unfreeze": unfreeze, "hidden": _sizes(hidden), "dropout": dropout, "c": c,
        "augment": "none" if no_augment else augment, "image_size": image_size, "val": val, "test": test,
        "val_split": val_split, "test_split": test_split, "seed": seed, "device": device, "workers": workers,
        "strict": strict, "cache": cache, "tensorboard": tensorboard, "name": name, "out_dir": out_dir,
    }  # fmt: skip
    given = {k for k in values if _given(ctx, k)}
    if no_augment:
        if "augment" in given and augment.strip().lower() not in ("none", "off", ""):
            raise UsageError(f"--no-augment contradicts --augment {augment}: give one of them")
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
    console.print(
        f"[bold]{escape(summary['backbone'])} {summary['strategy']}[/]{frozen}: {m['split']} accuracy "
        f"[bold]{m['accuracy']:.4f}[/], {topk}log loss {m['log_loss']:.4f}, "
        f"macro F1 {m['macro_f1']:.4f} on {m['n']} images; {m['train_seconds']:.1f} s"
        + (f"; feature cache {m['feature_cache']}" if "feature_cache" in m else "")
    )
    console.print(f"run directory: {result.run_dir}", markup=False)


def _launch(nproc: int) -> int:
    """Run this same command as ``nproc`` data-parallel processes under torch's elastic launcher."""
    import subprocess
    import sys

    from ..distributed import launch_command

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            argv.append(arg)
    err_console.print(f"launching {nproc} processes with torchrun (torch.distributed.run --standalone)", markup=False)
    launcher = subprocess.Popen(launch_command(nproc, argv), stderr=subprocess.PIPE, text=True)
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


def _sizes(text: str) -> list[int]:
    from ..errors import UsageError

    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--hidden must be comma-separated integers, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise UsageError(f"--hidden sizes must be positive, got {text!r}")
    return sizes
