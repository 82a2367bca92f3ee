"""tlzoo's built-in ONNX exporter (``tlzoo export onnx RUN``).

Registered through the ``tlzoo`` entry-point group like any plugin; torch,
TensorFlow, onnx and onnxruntime are imported only when an export runs.
"""

from __future__ import annotations

from tlzoo import ExporterSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def register_exporters() -> list[ExporterSpec]:
    return [
        ExporterSpec(
            name="onnx",
            exporter="tlzoo_onnx.export:export",
            file_suffix=".onnx",
            description="ONNX for onnxruntime (CPU, CUDA, TensorRT): checked against the source model, "
            "fp32 / fp16 / int8, optional raw uint8 input with preprocessing inside the graph",
        )
    ]
