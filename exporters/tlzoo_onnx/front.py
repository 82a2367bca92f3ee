"""The ``--raw-input`` front: uint8 NHWC images of any size -> the classifier's input, as ONNX operators.

It does in the graph what :func:`tlzoo.images.decode.load_image` does after decoding: the run's resize policy
(squash, crop with its crop fraction, pad with the mean colour), the interpolation (antialiased, as Pillow
resizes, from opset 18), rounding to whole grey levels, then the normalization and the classifier's layout.
It is built here, once for every framework, and joined in front of the framework's converted classifier.
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any

import numpy as np

from tlzoo.images.decode import WHOLE
from tlzoo.specs import Preprocessing

FRONT_OUTPUT = "tlzoo_pixels"
RAW = "tlzoo_raw_images"


def prepend(path: Path, prep: Preprocessing, size: tuple[int, int], layout: str, opset: int) -> None:
    """Rewrite the classifier at ``path`` (float input in ``layout``) to take raw uint8 NHWC images."""
    import onnx
    from onnx import compose

    classifier = onnx.load(str(path))
    name = classifier.graph.input[0].name
    front = _front(prep, size, layout, opset, classifier)
    merged = compose.merge_models(front, classifier, io_map=[(FRONT_OUTPUT, name)])
    for item in merged.graph.node:  # the joined model's input takes the classifier's input name back
        item.input[:] = [name if i == RAW else i for i in item.input]
    merged.graph.input[0].name = name
    onnx.save(merged, str(path))


def _front(prep: Preprocessing, size: tuple[int, int], layout: str, opset: int, classifier: Any) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    h, w = size
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    x = node("Cast", [RAW], "f_x", to=TensorProto.FLOAT)
    x = node("Transpose", [x], "f_nchw", perm=[0, 3, 1, 2])
    shape = node("Shape", [x], "f_shape")
    n3 = node("Slice", [shape, const("f_0", [0], np.int64), const("f_2", [2], np.int64)], "f_n3")
    hw = node("Cast", [node("Slice", [shape, "f_2", const("f_4", [4], np.int64)], "f_hw_i")], "f_hw", to=TensorProto.FLOAT)
    target = const("f_target", [h, w])
    resize_attrs: dict[str, Any] = {"mode": "cubic" if prep.interpolation == "bicubic" else "linear",
                                    "coordinate_transformation_mode": "half_pixel"}  # fmt: skip
    if prep.interpolation == "bicubic":
        resize_attrs["cubic_coeff_a"] = -0.5  # Pillow's bicubic
    if opset >= 18:
        resize_attrs["antialias"] = 1  # Pillow's resize filters over the whole footprint when downscaling

    def resize(src: str, hw_sizes: str, out: str) -> str:
        sizes = node("Concat", [n3, hw_sizes], out + "_sizes", axis=0)
        return node("Resize", [src, "", "", sizes], out, **resize_attrs)

    ratio = node("Div", [target, hw], "f_ratio")
    r0 = node("Gather", [ratio, const("f_i0", 0, np.int64)], "f_r0", axis=0)
    r1 = node("Gather", [ratio, const("f_i1", 1, np.int64)], "f_r1", axis=0)
    if prep.resize == "squash" and prep.crop_fraction >= 1.0:
        y = resize(x, const("f_target_i", [h, w], np.int64), "f_resized")
    elif prep.resize in ("squash", "crop"):
        # As the decoder (and torchvision's and timm's transforms): resize to whole pixels, then crop the centre at a
        # whole-pixel offset (tlzoo.images.decode._plan).
        whole_h, whole_w = math.floor(h / prep.crop_fraction + WHOLE), math.floor(w / prep.crop_fraction + WHOLE)
        if prep.resize == "squash":
            sizes = const("f_whole", [whole_h, whole_w])
        else:
            if h == w:  # the short side to floor(size / crop fraction)
                short = node("Min", [node("Gather", [hw, "f_i0"], "f_h0", axis=0),
                                     node("Gather", [hw, "f_i1"], "f_w0", axis=0)], "f_short")  # fmt: skip
                scale = node("Div", [const("f_whole_side", float(whole_h)), short], "f_scale")
            else:
                scale = node("Div", [node("Max", [r0, r1], "f_cover"), const("f_fraction", prep.crop_fraction)], "f_scale")
            sizes = node("Floor", [node("Add", [node("Mul", [hw, scale], "f_sizes_raw"), const("f_eps", WHOLE)],
                                        "f_sizes_eps")], "f_sizes")  # fmt: skip
        as_int = {"to": TensorProto.INT64}
        resized = resize(x, node("Cast", [sizes], "f_sizes_i", **as_int), "f_resized_whole")
        start = node("Round", [node("Div", [node("Sub", [sizes, target], "f_spare"), const("f_two", 2.0)], "f_half")],
                     "f_start_f")  # fmt: skip
        start_i = node("Cast", [start], "f_start", **as_int)
        end_i = node("Add", [start_i, const("f_target_i", [h, w], np.int64)], "f_end")
        y = node("Slice", [resized, start_i, end_i, const("f_axes", [2, 3], np.int64)], "f_resized")
    else:  # pad: fit inside, fill the rest with the mean colour
        scale = node("Min", [r0, r1], "f_fit")
        fitted = node("Min", [node("Max", [node("Round", [node("Mul", [hw, scale], "f_scaled")], "f_scaled_r"),
                                            const("f_one", 1.0)], "f_at_least_1"), target], "f_fitted")  # fmt: skip
        fitted_i = node("Cast", [fitted], "f_fitted_i", to=TensorProto.INT64)
        y = resize(x, fitted_i, "f_resized")
        fill = const("f_fill", np.asarray(prep.pad_colour(), np.float32).reshape(1, 3, 1, 1))
        spare = node("Sub", [const("f_target_i2", [h, w], np.int64), fitted_i], "f_spare_i")
        before = node("Div", [spare, const("f_two_i", 2, np.int64)], "f_before")  # integer division: floor
        after = node("Sub", [spare, before], "f_after")
        zeros = const("f_zeros2", [0, 0], np.int64)
        pads = node("Concat", [zeros, before, zeros, after], "f_pads", axis=0)
        shifted = node("Sub", [y, fill], "f_shifted")
        y = node("Add", [node("Pad", [shifted, pads, const("f_zero", 0.0)], "f_padded"), fill], "f_filled")
    # Whole grey levels in 0..255, as the decoder's uint8 image.
    y = node("Clip", [node("Round", [y], "f_round"), const("f_lo", 0.0), const("f_hi", 255.0)], "f_uint8_range")
    if prep.channel_order == "BGR":
        y = node("Gather", [y, const("f_bgr", [2, 1, 0], np.int64)], "f_bgr_order", axis=1)
    mean = np.asarray(prep.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(prep.std, np.float32).reshape(1, 3, 1, 1)
    y = node("Mul", [y, const("f_range", np.float32(prep.value_range / 255.0))], "f_ranged")
    y = node("Div", [node("Sub", [y, const("f_mean", mean)], "f_centred"), const("f_std", std)], "f_normalized")
    if layout == "NHWC":
        y = node("Transpose", [y], "f_nhwc", perm=[0, 2, 3, 1])
    nodes.append(helper.make_node("Identity", [y], [FRONT_OUTPUT]))
    batch = classifier.graph.input[0].type.tensor_type.shape.dim[0]
    n: Any = batch.dim_value if batch.HasField("dim_value") else "batch"
    graph = helper.make_graph(
        nodes, "tlzoo_raw_input_front",
        [helper.make_tensor_value_info(RAW, TensorProto.UINT8, [n, "height", "width", 3])],
        [helper.make_tensor_value_info(FRONT_OUTPUT, TensorProto.FLOAT, None)], initializer=inits,
    )  # fmt: skip
    default = next((o.version for o in classifier.opset_import if o.domain in ("", "ai.onnx")), opset)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", default)])
    model.ir_version = classifier.ir_version
    return model


def feed(images: np.ndarray, prep: Preprocessing, size: tuple[int, int]) -> np.ndarray:
    """Images the decoder already brought to ``size`` by ``prep``, as input for a raw-input graph that gives
    the same pixels: for ``crop`` and ``squash`` with a crop fraction, each is centred on a canvas as large as
    the crop fraction says, which the graph crops away again (pad leaves an image of the input size as it is)."""
    if prep.resize == "pad" or prep.crop_fraction >= 1.0:
        return np.ascontiguousarray(images)
    h, w = size
    ch, cw = math.floor(h / prep.crop_fraction + WHOLE), math.floor(w / prep.crop_fraction + WHOLE)
    canvas = np.zeros((len(images), ch, cw, 3), np.uint8)
    top, left = round((ch - h) / 2), round((cw - w) / 2)
    canvas[:, top : top + h, left : left + w] = images
    return canvas
