"""Export a trained run (backbone + head) to one ONNX file, then check it against the source model.

torch: ``torch.onnx.export(dynamo=True)`` (the TorchScript exporter fails on VGG's adaptive pooling
at non-224 sizes). Keras: tf2onnx from a ``tf.function`` with an explicit input signature (its
Keras path is fragile with Keras 3). The graph ends in probabilities; with ``raw_input`` it starts
from uint8 NHWC images and resizes and normalizes them itself.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tlzoo import __version__
from tlzoo.errors import TlzooError, UsageError
from tlzoo.rundir import fault_point, reclaim_temp_files, temp_prefix
from tlzoo.trained import TrainedRun, load_run

DEFAULT_OPSET = 18
MIN_OPSET, MAX_OPSET = 13, 23


class ExportCheckFailed(TlzooError):
    """The exported model does not reproduce the source model."""


def export(run: TrainedRun | Path | str, out: Path | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export, check and (only when the check passes) write ``out``. Returns the check report."""
    opts = {"opset": DEFAULT_OPSET, "batch": "dynamic", "fp16": False, "int8": False, "calibration": None,
            "raw_input": False, "check": True, "atol": 1e-4, "max_drop": None, **(options or {})}  # fmt: skip
    if not isinstance(run, TrainedRun):
        run = load_run(Path(run))
    opset = int(opts["opset"])
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (onnxruntime loads these)")
    if opts["fp16"] and opts["int8"]:
        raise UsageError("choose one of --fp16 and --int8")
    if opts["max_drop"] is not None and (not opts["check"] or float(opts["max_drop"]) < 0):
        raise UsageError("--max-drop needs the check (drop --no-check) and a number of points >= 0")
    batch = _batch(opts["batch"])
    variant = "int8" if opts["int8"] else "fp16" if opts["fp16"] else "fp32"
    out = Path(out) if out else run.run_dir / ("model.onnx" if variant == "fp32" else f"model.{variant}.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)

    reclaim_temp_files(out.parent)  # what an export killed earlier left behind
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f"{temp_prefix()}export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        if run.framework == "torch":
            _export_torch(run, fp32, opset, batch, opts["raw_input"])
        else:
            _export_keras(run, fp32, opset, batch, opts["raw_input"])
        _finish(fp32, run, opts["raw_input"], variant="fp32")
        final = fp32
        if variant == "fp16":
            final = Path(tmp) / "fp16.onnx"
            _to_fp16(fp32, final)
            _finish(final, run, opts["raw_input"], variant="fp16")
        elif variant == "int8":
            final = Path(tmp) / "int8.onnx"
            _to_int8(fp32, final, run, opts["raw_input"], opts["calibration"], tmp)
            _finish(final, run, opts["raw_input"], variant="int8")
        report: dict[str, Any] = {"path": str(out), "variant": variant, "opset": opset, "batch": opts["batch"],
                                  "raw_input": bool(opts["raw_input"]), "framework": run.framework}  # fmt: skip
        if opts["check"]:
            report.update(check(run, final, fp32, variant, float(opts["atol"]), opts["raw_input"], opts["max_drop"]))
        fault_point(f"rename:{out.name}")
        os.replace(final, out)
    from tlzoo.model_card import append_export

    append_export(run.run_dir, report)
    return report


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


# ------------------------------------------------------------------ torch


def _export_torch(run: TrainedRun, path: Path, opset: int, batch: int | None, raw: bool) -> None:
    import torch
    from torch import nn

    from tlzoo.frameworks.torch_train import normalize

    h, w = run.input_size
    prep, output = run.preprocessing, run.meta["output"]

    class Exported(nn.Module):
        def __init__(self, classifier: nn.Module) -> None:
            super().__init__()
            self.classifier = classifier

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if raw:  # uint8 NHWC of any size -> the backbone's input
                x = normalize(x, prep)
                x = nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            logits = self.classifier(x)
            if output == "ovr":
                p = torch.sigmoid(logits)
                return p / p.sum(dim=1, keepdim=True)
            return torch.softmax(logits, dim=1)

    model = Exported(run.model).eval()
    n = batch or 2
    example = torch.zeros(n, h, w, 3, dtype=torch.uint8) if raw else torch.zeros(n, 3, h, w)
    dims: dict[int, Any] = {}
    if batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if raw:
        dims[1] = torch.export.Dim("height", min=16, max=4096)
        dims[2] = torch.export.Dim("width", min=16, max=4096)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=["images"],
            output_names=["probabilities"], dynamic_shapes=({**dims},) if dims else None, verbose=False,
        )  # fmt: skip
    program.save(str(path), external_data=False)


# ------------------------------------------------------------------ keras


def _export_keras(run: TrainedRun, path: Path, opset: int, batch: int | None, raw: bool) -> None:
    import warnings

    from tlzoo.frameworks.keras_quiet import tf
    from tlzoo.frameworks.keras_train import normalize

    with warnings.catch_warnings():  # tf2onnx's own deprecation warnings say nothing a user can act on
        warnings.simplefilter("ignore")
        import tf2onnx

    h, w = run.input_size
    prep, output, model = run.preprocessing, run.meta["output"], run.model
    if raw:
        signature = [tf.TensorSpec((batch, None, None, 3), tf.uint8, name="images")]
    else:
        signature = [tf.TensorSpec((batch, h, w, 3), tf.float32, name="images")]

    @tf.function(input_signature=signature)
    def serve(images: tf.Tensor) -> tf.Tensor:
        x = images
        if raw:
            x = normalize(tf.image.resize(tf.cast(x, tf.float32), (h, w), method="bilinear"), prep)
        logits = model(x, training=False)
        if output == "ovr":
            p = tf.sigmoid(logits)
            return tf.identity(p / tf.reduce_sum(p, axis=1, keepdims=True), name="probabilities")
        return tf.identity(tf.nn.softmax(logits, axis=1), name="probabilities")

    # Freeze everything the function captures (variables, and the constant tensors some Keras 3 layers
    # such as EfficientNet's Normalization keep), or tf2onnx leaves them as extra graph inputs.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs], opset=opset,
        )  # fmt: skip
    import onnx

    graph = proto.graph
    graph.input[0].name, graph.output[0].name = _rename_io(graph, "images", "probabilities")
    onnx.save(proto, str(path))


def _rename_io(graph: Any, new_in: str, new_out: str) -> tuple[str, str]:
    old_in, old_out = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        node.input[:] = [new_in if name == old_in else name for name in node.input]
        node.output[:] = [new_out if name == old_out else name for name in node.output]
    return new_in, new_out


# ------------------------------------------------------------------ file finishing and variants


def _finish(path: Path, run: TrainedRun, raw: bool, variant: str) -> None:
    """IR version the runtime loads, self-describing metadata, and onnx.checker."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    # onnx writes its newest IR version; onnxruntime reads older ones only. The lowest IR version
    # that carries the model's opsets is the most widely loadable.
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    h, w = run.input_size
    layout = "NHWC uint8 RGB 0..255, any size (resized and normalized in the graph)" if raw else (
        "NHWC float32, normalized" if run.framework == "keras" else "NCHW float32, normalized"
    )
    meta = {
        "tlzoo.version": __version__,
        "tlzoo.labels": json.dumps(run.classes),
        "tlzoo.backbone": run.meta["backbone"],
        "tlzoo.framework": run.framework,
        "tlzoo.strategy": run.meta.get("strategy", ""),
        "tlzoo.input_size": json.dumps([h, w]),
        "tlzoo.layout": "NHWC" if raw or run.framework == "keras" else "NCHW",
        "tlzoo.input": layout,
        "tlzoo.raw_input": json.dumps(bool(raw)),
        "tlzoo.preprocessing": json.dumps(run.preprocessing.to_dict()),
        "tlzoo.output": "probabilities",
        "tlzoo.variant": variant,
    }
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
             weight_bits: int = 8, activation_bits: int = 8) -> None:  # fmt: skip
    """Static QDQ quantization, per-channel weights, calibrated on ``calibration`` or the run's images.

    16 bits on one side (``weight_bits``/``activation_bits``) is for diagnosing where an int8
    accuracy loss comes from: onnxruntime runs such files with fp32 kernels.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = _calibration_images(run, calibration)
    inputs = _model_inputs(run, images, raw)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": inputs[i : i + 16]} for i in range(0, len(inputs), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = Path(tmp) / "prepared.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type={8: QuantType.QUInt8, 16: QuantType.QUInt16}[activation_bits],
        weight_type={8: QuantType.QInt8, 16: QuantType.QInt16}[weight_bits],
    )  # fmt: skip


def _calibration_images(run: TrainedRun, calibration: Any, limit: int = 256) -> np.ndarray:
    from tlzoo import data as datamod

    if calibration:
        samples = datamod.scan(Path(calibration))
        rng = np.random.default_rng(0)
        chosen = [samples[i] for i in sorted(rng.permutation(len(samples))[:limit])]
        return datamod.load(chosen, run.input_size, run.classes if _same_labels(chosen, run) else None).images
    return _split_images(run, "train", limit)


def _same_labels(samples: list[Any], run: TrainedRun) -> bool:
    return {s.label for s in samples} <= set(run.classes)


def _split_images(run: TrainedRun, subset: str, limit: int | None = None) -> np.ndarray:
    images, _ = split_set(run, subset, limit)
    return images


def split_set(run: TrainedRun, subset: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The run's own images of one subset (from split.csv), decoded at the input size, and their labels."""
    import csv

    from tlzoo.preprocess import load_image

    split = run.run_dir / "split.csv"
    if not split.is_file():
        raise UsageError(f"{run.run_dir} has no split.csv to check the export against; use --no-check")
    try:
        with open(split, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"path", "label", "subset"} <= set(reader.fieldnames or []):
                raise ValueError(f"columns {reader.fieldnames}, expected path,label,subset")
            rows = [r for r in reader if r["subset"] == subset]
        unknown = sorted({r["label"] for r in rows} - set(run.classes))
        if unknown or any(not r["path"] for r in rows):
            raise ValueError(f"labels {unknown} are not the run's classes" if unknown else "empty paths")
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{split} is damaged ({exc}); the run's files were edited or are corrupt "
                         f"(export with --no-check, or train again)") from None  # fmt: skip
    if not rows and subset == "val":
        raise UsageError(f"{run.run_dir} has no validation images to check the export against; use --no-check")
    if limit and len(rows) > limit:
        # split.csv lists a subset class by class: take a seeded sample across all of it, not its head
        # (calibrating int8 on the first classes alone ruins the other classes' activation ranges).
        keep = np.sort(np.random.default_rng(0).choice(len(rows), size=limit, replace=False))
        rows = [rows[i] for i in keep]
    index = {c: i for i, c in enumerate(run.classes)}
    images, labels = [], []
    for r in rows:
        try:
            images.append(load_image(r["path"], run.input_size))
        except (OSError, ValueError):
            continue  # the data moved or changed since training: check on what is left
        labels.append(index[r["label"]])
    if not images:
        raise UsageError(f"none of the images in {split} can be read any more; use --no-check")
    return np.stack(images), np.asarray(labels)


def _model_inputs(run: TrainedRun, images: np.ndarray, raw: bool) -> np.ndarray:
    from tlzoo.preprocess import normalize

    if raw:
        return images
    x = normalize(images, run.preprocessing)
    return x if run.framework == "keras" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ------------------------------------------------------------------ check


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(path: Path, inputs: np.ndarray, batch: int = 32) -> np.ndarray:
    session = _session(path)
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else batch
    out = []
    for i in range(0, len(inputs), step):
        chunk = inputs[i : i + step]
        if len(chunk) < step and isinstance(fixed, int):
            pad = np.repeat(chunk[-1:], step - len(chunk), axis=0)
            out.append(session.run(None, {"images": np.concatenate([chunk, pad])})[0][: len(chunk)])
        else:
            out.append(session.run(None, {"images": chunk})[0])
    return np.concatenate(out).astype(np.float64)


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
    agree = float((ours.argmax(1) == source.argmax(1)).mean())
    report: dict[str, Any] = {
        "check_images": int(len(images)), "max_abs_diff": diff, "top1_agreement": agree,
        "source_accuracy": float((source.argmax(1) == labels).mean()),
        "onnx_accuracy": float((ours.argmax(1) == labels).mean()),
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
        report["fp32_accuracy"] = float((reference.argmax(1) == labels).mean())
        report["accuracy_change_vs_fp32"] = report["onnx_accuracy"] - report["fp32_accuracy"]
        report["top1_agreement_vs_fp32"] = float((ours.argmax(1) == reference.argmax(1)).mean())
        drop = -100 * report["accuracy_change_vs_fp32"]
        if max_drop is not None and drop > max_drop:
            raise ExportCheckFailed(
                f"the {variant} model loses {drop:.2f} accuracy points against fp32 on {len(images)} validation images "
                f"({report['fp32_accuracy']:.4f} -> {report['onnx_accuracy']:.4f}; allowed {max_drop:g}). No file was "
                f"written. Export fp32 (or --fp16), or allow more with --max-drop"
            )
        report["check"] = "passed" if max_drop is not None else "reported"
    return report
