"""Export a trained run (backbone + head) to one ONNX file, then check it against the source model.

The run's framework adapter converts its classifier (``adapter.converter("onnx")``: torch.onnx for
torch, tf2onnx for Keras); this module owns everything after that: the IR version, the metadata
(:mod:`tlzoo_onnx.metadata`), fp16 and int8 variants, and the check against the source model. The
graph ends in probabilities; with ``raw_input`` it starts from uint8 NHWC images and resizes and
normalizes them itself.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlzoo.version import __version__
from tlzoo.errors import TlzooError, UsageError, one_line
from tlzoo.files import fault_point, reclaim_temp_files, temp_prefix
from tlzoo.runs.trained import TrainedRun, load_run

from . import MAX_OPSET, MIN_OPSET


class ExportCheckFailed(TlzooError):
    """The exported model does not reproduce the source model."""


def export(run: TrainedRun | Path | str, out: Path | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export, check and (only when the check passes) write ``out``. Returns the check report, with
    ``summary`` and ``warnings`` lines for people."""
    from tlzoo.settings import resolve

    from . import OPTIONS

    opts = resolve(OPTIONS, {k: v for k, v in (options or {}).items() if v is not None})
    if not isinstance(run, TrainedRun):
        run = load_run(Path(run))
    opset = int(opts["opset"])
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (onnxruntime loads these)")
    if opts["fp16"] and opts["int8"]:
        raise UsageError("choose one of --fp16 and --int8")
    if opts["max_drop"] is not None and (not opts["check"] or float(opts["max_drop"]) < 0):
        raise UsageError("--max-drop needs the check (drop --no-check) and a number of points >= 0")
    stray = [flag for flag, given in (("--calibration", opts["calibration"] is not None),
                                      ("--no-int8-search", not opts["int8_search"]),
                                      ("--no-refit-head", not opts["refit_head"])) if given]  # fmt: skip
    if stray and not opts["int8"]:
        raise UsageError(f"{', '.join(stray)}: for --int8 exports only")
    batch = _batch(opts["batch"])
    variant = "int8" if opts["int8"] else "fp16" if opts["fp16"] else "fp32"
    out = Path(out) if out else run.run_dir / ("model.onnx" if variant == "fp32" else f"model.{variant}.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)

    reclaim_temp_files(out.parent)  # what an export killed earlier left behind
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f"{temp_prefix()}export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        _convert(run, fp32, opset, batch, opts["raw_input"])
        _finish(fp32, run, opts["raw_input"], variant="fp32")
        final = fp32
        if variant == "fp16":
            final = Path(tmp) / "fp16.onnx"
            _to_fp16(fp32, final)
            _finish(final, run, opts["raw_input"], variant="fp16")
        elif variant == "int8":
            final = Path(tmp) / "int8.onnx"
            int8 = _to_int8(fp32, final, run, opts["raw_input"], opts["calibration"], tmp, refit_head=opts["refit_head"],
                            batch=batch, max_drop=(1.0 if opts["max_drop"] is None else float(opts["max_drop"])) if opts["int8_search"] else None)  # fmt: skip
            _finish(final, run, opts["raw_input"], variant="int8")
        report: dict[str, Any] = {"path": str(out), "variant": variant, "opset": opset, "batch": opts["batch"],
                                  "raw_input": bool(opts["raw_input"]), "framework": run.framework}  # fmt: skip
        if variant == "int8":
            report.update(int8.report())
        if opts["check"]:
            report.update(check(run, final, fp32, variant, float(opts["atol"]), opts["raw_input"], opts["max_drop"]))
        fault_point(f"rename:{out.name}")
        os.replace(final, out)
    from tlzoo.runs.model_card import append_export

    append_export(run.run_dir, report)
    report["summary"], report["warnings"] = _summary(report, opts["max_drop"])
    return report


def _summary(report: dict[str, Any], max_drop: float | None) -> tuple[list[str], list[str]]:
    lines, warnings = [f"wrote {report['path']} ({report['variant']})"], []
    searched = 0  # layers the int8 search kept in fp32 (the refitted head is kept fp32 by design)
    if "int8_layers" in report:
        refit = report["int8_head_refit"]
        searched = len(report["int8_kept_fp32"]) - int(refit)
        lines.append(
            f"int8: {report['int8_layers'] - len(report['int8_kept_fp32'])} of {report['int8_layers']} layers quantized"
            + ("; the linear head stays fp32, refitted on the int8 backbone's features of the training images" if refit
               else f" (head not refitted: {report['int8_head_note']})" if report.get("int8_head_note") else "")
            + (f"; the {searched} most sensitive layers kept in fp32 by the search ({len(report['int8_search'])} trials)"
               if searched else "")
        )  # fmt: skip
    if "max_abs_diff" in report:
        lines.append(
            f"checked on {report['check_images']} validation images: max |p - p_source| {report['max_abs_diff']:.2e}, "
            f"{'label decisions agreeing' if report.get('score') == 'mean average precision' else 'top-1 agreement'} "
            f"{report['top1_agreement']:.2%}, {report.get('score', 'accuracy')} {report['onnx_accuracy']:.4f} "
            f"(source {report['source_accuracy']:.4f})"
            + (f", change vs fp32 {report['accuracy_change_vs_fp32']:+.4f}" if "accuracy_change_vs_fp32" in report else "")
        )
    measured = report.get("check_images")
    if "accuracy_change_vs_fp32" in report and measured is not None and measured < 100:
        warnings.append(
            f"the {report.get('score', 'accuracy')} change was measured on only {measured} validation images, where one image is "
            f"{100 / measured:.1f} points: it cannot show a change of a point"
            + (f" (--max-drop {max_drop:g})" if max_drop is not None else "")
            + "; check on more data with tlzoo evaluate MODEL.onnx --data DIR"
        )  # fmt: skip
    speed = report.get("int8_speedup")
    at = f"batch {_batch(report.get('batch')) or 1}"
    if speed is not None:
        lines.append(f"int8 runs at {speed:.2f}x fp32's speed ({at}, this machine)")
    if speed is not None and speed < 1:
        warnings.append(
            f"the int8 file runs slower than fp32 here ({speed:.2f}x at {at}"
            + (f": the search kept {searched} of {report['int8_layers']} layers in fp32 to stay within the accuracy limit"
               if searched else "")
            + ("); export fp32, or allow a larger drop with --max-drop" if searched else "); export fp32")
        )  # fmt: skip
    elif 2 * searched > report.get("int8_layers", 0):
        warnings.append(
            f"to stay within the accuracy limit the search kept {len(report['int8_kept_fp32'])} of {report['int8_layers']} "
            f"layers in fp32, so little of int8's speed remains (it may be slower than fp32); export fp32, or allow a "
            f"larger drop with --max-drop"
        )  # fmt: skip
    drop = -100 * report.get("accuracy_change_vs_fp32", 0.0)
    if drop > 1.0 and max_drop is None:
        warnings.append(
            f"the {report['variant']} model loses {drop:.1f} {report.get('score', 'accuracy')} points against fp32 on the validation "
            f"images; keep the fp32 model (or --fp16) where that matters, or gate the export with --max-drop"
        )
    return lines, warnings


def _batch(value: Any) -> int | None:
    if value in (None, "dynamic"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--batch must be 'dynamic' or a positive number, got {value!r}") from None
    if n < 1:
        raise UsageError(f"--batch must be 'dynamic' or a positive number, got {value!r}")
    return n


def _convert(run: TrainedRun, path: Path, opset: int, batch: int | None, raw: bool) -> None:
    from tlzoo.errors import PluginError

    convert = run.adapter.converter("onnx")
    if convert is None:
        raise UsageError(f"{run.meta.backbone}: the {run.framework} framework plugin cannot convert models to ONNX")
    try:
        # The framework converts the classifier alone (float input); the raw-input front is tlzoo's own.
        convert(run.model, path, input_size=run.input_size, preprocessing=run.preprocessing, output=run.meta.output,
                opset=opset, batch=batch, raw_input=False)  # fmt: skip
    except (TlzooError, MemoryError, OSError):
        raise
    except Exception as exc:
        raise PluginError(f"the {run.framework} framework's ONNX conversion of {run.meta.backbone} failed: "
                          f"{type(exc).__name__}: {one_line(exc)}") from exc  # fmt: skip
    if raw:
        from .front import prepend

        prepend(path, run.preprocessing, run.input_size, _layout(run), opset)


# ------------------------------------------------------------------ file finishing and variants


def _finish(path: Path, run: TrainedRun, raw: bool, variant: str) -> None:
    """IR version the runtime loads, self-describing metadata, and onnx.checker."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    # onnx writes its newest IR version; onnxruntime reads older ones only. The lowest IR version
    # that carries the model's opsets is the most widely loadable.
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    from . import metadata

    meta = metadata.build(
        version=__version__, labels=run.classes, backbone=run.meta.backbone, framework=run.framework,
        strategy=run.meta.strategy, input_size=run.input_size, layout=_layout(run), raw_input=raw,
        preprocessing=run.preprocessing, variant=variant, thresholds=run.meta.thresholds,
    )  # fmt: skip
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "tlzoo"
    model.producer_version = __version__
    onnx.checker.check_model(model, full_check=False)
    onnx.save(model, str(path))


def _to_fp16(src: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    import onnx_ir as ir

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, disable_shape_infer=False)
    # The converter appends the fp32<->fp16 casts of the inputs at the end of the node list;
    # ONNX requires topological order.
    graph = ir.from_proto(model)
    graph.graph.sort()
    onnx.save(ir.to_proto(graph), str(dest))


def _to_int8(src: Path, dest: Path, run: TrainedRun, raw: bool, calibration: Any, tmp: str, *,
             refit_head: bool = True, batch: int | None = None, max_drop: float | None = None, weight_bits: int = 8,
             activation_bits: int = 8) -> Any:  # fmt: skip
    """Static QDQ quantization, per-channel weights, calibrated on ``calibration`` or the run's images; a linear
    head refitted on the int8 features, and the layers that cost accuracy kept in fp32 until the drop on the
    validation images is within ``max_drop`` points (None: no search). See :mod:`tlzoo_onnx.int8`.

    16 bits on one side (``weight_bits``/``activation_bits``) is for diagnosing where an int8
    accuracy loss comes from: onnxruntime runs such files with fp32 kernels.
    """
    from .int8 import Int8Result, quantize_within, speedup

    # Plain int8 (--no-refit-head --no-int8-search) needs neither the validation images nor the head.
    job = int8_job(src, run, raw, calibration, tmp, refit_head=refit_head, weight_bits=weight_bits,
                   activation_bits=activation_bits) if refit_head or max_drop is not None else None  # fmt: skip
    quantizer = job.quantizer if job else _quantizer(src, run, raw, calibration, tmp, weight_bits, activation_bits)
    if job is None or (max_drop is None and job.head is None):
        quantizer.quantize(dest, [])
        result = Int8Result(layers=len(quantizer.layers()))
    else:
        result = quantize_within(quantizer, dest, head=job.head, refit=job.refit, accuracy=job.accuracy,
                                 max_drop=max_drop, fp32_accuracy=job.fp32_accuracy, tmp=Path(tmp))  # fmt: skip
    result.head_note = job.why if job else "--no-refit-head"
    # What int8 buys here at the file's smallest batch: the search may keep so much in fp32 that it is slower.
    x = quantizer.calibration[:1]
    result.speedup = speedup(src, dest, np.repeat(x, batch or 1, axis=0))
    return result


@dataclass
class Int8Job:
    """What an int8 export works with: the calibrated quantizer, the linear head to refit (None: not refitted,
    for the reason ``why``) and its data, and the accuracy on the validation images (see tlzoo_onnx.int8)."""

    quantizer: Any
    head: Any
    why: str
    refit: Any
    accuracy: Callable[[Path], tuple[float, float]]
    fp32_accuracy: float


def _quantizer(src: Path, run: TrainedRun, raw: bool, calibration: Any, tmp: str, weight_bits: int,
               activation_bits: int) -> Any:  # fmt: skip
    from .int8 import Quantizer

    return Quantizer(src, _model_inputs(run, _calibration_images(run, calibration), raw), Path(tmp),
                     weight_bits=weight_bits, activation_bits=activation_bits)  # fmt: skip


def int8_job(src: Path, run: TrainedRun, raw: bool, calibration: Any, tmp: str, *, refit_head: bool = True,
             weight_bits: int = 8, activation_bits: int = 8) -> Int8Job:  # fmt: skip
    """Calibrate once, find the head to refit, and load the validation images every trial is measured on."""
    from .int8 import RefitData, linear_head

    quantizer = _quantizer(src, run, raw, calibration, tmp, weight_bits, activation_bits)
    if run.meta.multilabel:  # refitted, the head would lose the Platt scaling its thresholds were chosen on
        head, why = None, "a multi-label head keeps its calibration and thresholds"
    else:
        head, why = linear_head(run, quantizer.graph) if refit_head else (None, "--no-refit-head")
    images, labels = split_set(run, "val", limit=256)
    inputs = _model_inputs(run, images, raw)
    reference = _run(src, inputs)
    refit = None
    if head is not None:
        train_images, train_labels = split_set(run, "train")
        refit = RefitData(_model_inputs(run, train_images, raw), train_labels, inputs, labels)

    def accuracy(path: Path) -> tuple[float, float]:
        p = _run(path, inputs)
        return score(run, p, labels), float(np.abs(p - reference).sum(1).mean())

    return Int8Job(quantizer, head, why, refit, accuracy, score(run, reference, labels))


def score(run: TrainedRun, proba: np.ndarray, labels: np.ndarray) -> float:
    """What an export is checked by: accuracy, or a multi-label run's mean average precision (macro AP over the
    labels present), each a share (``--max-drop`` is in points of it)."""
    if run.meta.multilabel:
        from tlzoo.multilabel import mean_average_precision

        return mean_average_precision(labels, proba)
    return float((proba.argmax(1) == labels).mean())


def agreement(run: TrainedRun, a: np.ndarray, b: np.ndarray) -> float:
    """How often two models decide alike: the top-1 class, or a multi-label run's (image, label) decisions at its
    thresholds."""
    if run.meta.multilabel:
        from tlzoo.multilabel import predicted

        thresholds = run.meta.thresholds or 0.5
        return float((predicted(a, thresholds) == predicted(b, thresholds)).mean())
    return float((a.argmax(1) == b.argmax(1)).mean())


def _calibration_images(run: TrainedRun, calibration: Any, limit: int = 256) -> np.ndarray:
    from tlzoo.images.batches import load
    from tlzoo.images.folders import scan

    if calibration:
        samples = scan(Path(calibration))
        rng = np.random.default_rng(0)
        chosen = [samples[i] for i in sorted(rng.permutation(len(samples))[:limit])]
        return load(chosen, run.input_size, run.classes if _same_labels(chosen, run) else None,
                            prep=run.preprocessing).images
    return _split_images(run, "train", limit)


def _same_labels(samples: list[Any], run: TrainedRun) -> bool:
    return {s.label for s in samples} <= set(run.classes)


def _split_images(run: TrainedRun, subset: str, limit: int | None = None) -> np.ndarray:
    images, _ = split_set(run, subset, limit)
    return images


def split_set(run: TrainedRun, subset: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The run's own images of one subset (from split.csv), decoded at the input size, and their labels."""
    from tlzoo.images.decode import load_image
    from tlzoo.runs.runfiles import SPLIT, split_labels

    split = run.files / SPLIT
    try:
        rows = run.files.read_split(subset, run.classes)
    except UsageError as exc:
        raise UsageError(f"{exc} (export with --no-check, or train again)") from None
    if not rows and subset == "val":
        raise UsageError(f"{run.run_dir} has no validation images to check the export against; use --no-check")
    if limit and len(rows) > limit:
        # split.csv lists a subset class by class: take a seeded sample across all of it, not its head
        # (calibrating int8 on the first classes alone ruins the other classes' activation ranges).
        keep = np.sort(np.random.default_rng(0).choice(len(rows), size=limit, replace=False))
        rows = [rows[i] for i in keep]
    every = split_labels(rows, run.classes)
    images, labels = [], []
    for r, y in zip(rows, every):
        try:
            images.append(load_image(r["path"], run.input_size, run.preprocessing))
        except (OSError, ValueError):
            continue  # the data moved or changed since training: check on what is left
        labels.append(y)
    if not images:
        raise UsageError(f"none of the images in {split} can be read any more; use --no-check")
    return np.stack(images), np.asarray(labels)


def _model_inputs(run: TrainedRun, images: np.ndarray, raw: bool) -> np.ndarray:
    from tlzoo.images.normalize import normalize

    if raw:
        from .front import feed

        return feed(images, run.preprocessing, run.input_size)
    x = normalize(images, run.preprocessing)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if _layout(run) == "NCHW" else x


def _layout(run: TrainedRun) -> str:
    """The classifier's input layout, as its framework plugin declares it."""
    from tlzoo.registry import get_registry

    return get_registry().framework(run.framework).input_layout


# ------------------------------------------------------------------ check


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(path: Path, inputs: np.ndarray, batch: int = 32) -> np.ndarray:
    from .int8 import run_batched

    return run_batched(_session(path), inputs, batch=batch).astype(np.float64)


def check(run: TrainedRun, path: Path, fp32: Path, variant: str, atol: float, raw: bool,
          max_drop: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the source model and onnxruntime on the run's validation images and compare.

    fp32 must reproduce the source (``atol``, 100 % top-1 agreement). fp16 and int8 report their
    accuracy change against fp32 on the same images; with ``max_drop`` (accuracy points) a larger
    loss fails the export.
    """
    images, labels = split_set(run, "val", limit=256)
    source = run.predict_proba(images)
    inputs = _model_inputs(run, images, raw)
    ours = _run(path, inputs)
    diff = float(np.abs(ours - source).max())
    agree = agreement(run, ours, source)
    # a multi-label run's "accuracy" here is its mean average precision (report["score"] says which)
    report: dict[str, Any] = {
        "check_images": int(len(images)), "max_abs_diff": diff, "top1_agreement": agree,
        "score": "mean average precision" if run.meta.multilabel else "accuracy",
        "source_accuracy": score(run, source, labels), "onnx_accuracy": score(run, ours, labels),
    }  # fmt: skip
    if variant == "fp32":
        if diff > atol or agree < 1.0:
            raise ExportCheckFailed(
                f"the exported model differs from the source model on {len(images)} validation images: "
                f"max |p - p_source| = {diff:.2e} (allowed {atol:.0e}), top-1 agreement {agree:.2%}. "
                f"No file was written. Use --atol to allow more, or --no-check to skip the check"
            )
        report["check"] = "passed"
    else:
        reference = _run(fp32, _model_inputs(run, images, raw))
        report["fp32_accuracy"] = score(run, reference, labels)
        report["accuracy_change_vs_fp32"] = report["onnx_accuracy"] - report["fp32_accuracy"]
        report["top1_agreement_vs_fp32"] = agreement(run, ours, reference)
        drop = -100 * report["accuracy_change_vs_fp32"]
        if max_drop is not None and drop > max_drop:
            raise ExportCheckFailed(
                f"the {variant} model loses {drop:.2f} {report['score']} points against fp32 on {len(images)} validation images "
                f"({report['fp32_accuracy']:.4f} -> {report['onnx_accuracy']:.4f}; allowed {max_drop:g}). No file was "
                f"written. Export fp32 (or --fp16), or allow more with --max-drop"
            )
        report["check"] = "passed" if max_drop is not None else "reported"
    return report
