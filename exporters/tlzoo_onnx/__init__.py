"""tlzoo's built-in ONNX exporter (``tlzoo export onnx RUN``) and its runtime (onnxruntime).

Registered through the ``tlzoo`` entry-point group like any plugin. The
exporter declares its own options (the CLI makes ``tlzoo export onnx`` options
of them), writes its own metadata (:mod:`tlzoo_onnx.metadata`) and provides
the runtime that opens ``.onnx`` files for ``tlzoo predict`` and
``tlzoo evaluate`` (:class:`tlzoo_onnx.predictor.Predictor`). torch,
TensorFlow, onnx and onnxruntime are imported only when an export or a
prediction runs.
"""

from __future__ import annotations

from tlzoo import ExporterSpec, FeatureEngineSpec, hookimpl
from tlzoo.settings import Setting

__version__ = "0.1.0"

DEFAULT_OPSET = 18
MIN_OPSET, MAX_OPSET = 13, 23

OPTIONS = (
    Setting("opset", "int", DEFAULT_OPSET, f"ONNX opset ({MIN_OPSET}..{MAX_OPSET})."),
    Setting("batch", "str", "dynamic", "'dynamic' or a fixed batch size."),
    Setting("fp16", "bool", False, "Half-precision weights (inputs and outputs stay float32)."),
    Setting("int8", "bool", False, "Static int8 quantization (QDQ, per-channel weights), calibrated on --calibration; "
            "the layers that cost accuracy stay fp32 until the drop is within --max-drop (default 1 point)."),
    Setting("calibration", "path", None, "Images for int8 calibration (default: the run's training images)."),
    Setting("int8_search", "bool", True, "int8: keep the most sensitive layers in fp32 until the accuracy drop on the "
            "validation images is within --max-drop."),
    Setting("refit_head", "bool", True, "int8 of a feature-extract run with a linear head: fit the head again on the "
            "int8 backbone's features of the training images."),
    Setting("raw_input", "bool", False, "Take uint8 NHWC images; resize and normalize in the graph."),
    Setting("check", "bool", True, "Compare with the source model on the run's validation images."),
    Setting("atol", "float", 1e-4, "fp32 check: largest allowed probability difference.", min=0.0),
    Setting("max_drop", "float", None,
            "fp16/int8: fail (and write nothing) if accuracy (multi-label: mean average precision) drops more than "
            "this many points vs fp32 (int8's search aims at 1 point when not given)."),
)


@hookimpl
def register_exporters() -> list[ExporterSpec]:
    return [
        ExporterSpec(
            name="onnx",
            exporter="tlzoo_onnx.export:export",
            file_suffix=".onnx",
            description="ONNX for onnxruntime (CPU, CUDA, TensorRT): checked against the source model, "
            "fp32 / fp16 / int8, optional raw uint8 input with preprocessing inside the graph",
            options=OPTIONS,
            runtime="tlzoo_onnx.predictor:Predictor",
            default_file="model.onnx",
        )
    ]


@hookimpl
def register_feature_engines() -> list[FeatureEngineSpec]:
    return [
        FeatureEngineSpec(
            name="onnxruntime",
            engine="tlzoo_onnx.features:engine",
            prepared="tlzoo_onnx.features:prepared",
            reopen="tlzoo_onnx.features:reopen",
            description="the frozen backbone exported once to ONNX (checked against the framework, cached) and "
            "run by onnxruntime",
        )
    ]
