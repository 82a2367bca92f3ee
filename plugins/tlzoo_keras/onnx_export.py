"""A trained Keras classifier as ONNX, for tlzoo's ONNX exporter (``adapter.converter("onnx")``).

tf2onnx from a ``tf.function`` with an explicit input signature (its Keras path is fragile with
Keras 3). The graph ends in probabilities. ``raw_input`` is refused: tlzoo's exporter joins its own
raw-input front (:mod:`tlzoo_onnx.front`) in front of the float-input graph this writes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from tlzoo.specs import Preprocessing

from .quiet import tf


def convert(model: Any, path: Path, *, input_size: tuple[int, int], preprocessing: Preprocessing, output: str,
            opset: int, batch: int | None, raw_input: bool) -> None:  # fmt: skip
    with warnings.catch_warnings():  # tf2onnx's own deprecation warnings say nothing a user can act on
        warnings.simplefilter("ignore")
        import tf2onnx

    if raw_input:
        raise ValueError("raw_input graphs are assembled by tlzoo_onnx.front; convert the float-input classifier")
    h, w = input_size
    signature = [tf.TensorSpec((batch, h, w, 3), tf.float32, name="images")]

    @tf.function(input_signature=signature)
    def serve(images: tf.Tensor) -> tf.Tensor:
        logits = model(images, training=False)
        if output == "features":  # a frozen backbone for the onnxruntime feature engine
            return tf.identity(logits, name="features")
        if output == "sigmoid":  # multi-label: each label's own probability
            return tf.identity(tf.sigmoid(logits), name="probabilities")
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
    graph.input[0].name, graph.output[0].name = _rename_io(graph, "images", "features" if output == "features" else "probabilities")
    onnx.save(proto, str(path))


def _rename_io(graph: Any, new_in: str, new_out: str) -> tuple[str, str]:
    old_in, old_out = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        node.input[:] = [new_in if name == old_in else name for name in node.input]
        node.output[:] = [new_out if name == old_out else name for name in node.output]
    return new_in, new_out
