"""int8 that keeps accuracy: onnxruntime's static QDQ quantization with per-channel weights, plus two
things onnxruntime leaves to its user.

- **A head refitted on int8 features.** A feature-extract classifier's head was fitted by scikit-learn
  on the fp32 backbone's features. Quantization moves every feature a little, always the same way for
  the same image, and a linear head fitted on small differences between classes is thrown off by it
  (MobileNetV2 on the digits: 94 % -> 72 %). The head is kept in fp32 and fitted again, as training
  fitted it (the run's head kind; its C, or C chosen again on the validation images), on the int8
  backbone's features of the run's training images.
- **A sensitivity search.** While the model loses more than ``max_drop`` accuracy points against
  fp32 on the validation images, the layers whose quantization distorts the output most are kept in
  fp32: each layer's sensitivity is measured once (the output distance to fp32 with that layer alone
  left in fp32), then the smallest number of the most sensitive layers that brings the drop within
  ``max_drop`` is found by doubling and bisection. Every trial is kept for the report.

Calibration runs once; every trial re-quantizes from the cached tensor ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

LAYER_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
LINEAR_HEADS = ("softmax", "logreg-ovr", "linear-svm")


@dataclass
class Int8Result:
    """What the quantization did, for the export report."""

    layers: int
    kept_fp32: list[str] = field(default_factory=list)
    head_refit: bool = False
    head_note: str = ""
    first_accuracy: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    speedup: float | None = None  # the int8 file's speed against fp32's at its smallest batch, on this machine

    def report(self) -> dict[str, Any]:
        return {
            "int8_layers": self.layers, "int8_kept_fp32": list(self.kept_fp32),
            "int8_head_refit": self.head_refit, **({"int8_head_note": self.head_note} if self.head_note else {}),
            **({"int8_accuracy_before_search": self.first_accuracy} if self.first_accuracy is not None else {}),
            "int8_search": self.trials,
            **({"int8_speedup": round(self.speedup, 3)} if self.speedup is not None else {}),
        }  # fmt: skip


class Quantizer:
    """One model, calibrated once, quantized with any set of layers left in fp32."""

    def __init__(self, src: Path, calibration: np.ndarray, tmp: Path, *, weight_bits: int = 8,
                 activation_bits: int = 8) -> None:  # fmt: skip
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.prepared = tmp / "prepared.onnx"
        self.cache = tmp / "calibration.json"
        self.calibration = calibration
        self.weight_bits, self.activation_bits = weight_bits, activation_bits
        quant_pre_process(str(src), str(self.prepared), skip_symbolic_shape=True)
        self.graph = onnx.load(str(self.prepared)).graph

    def layers(self) -> list[str]:
        return [n.name for n in self.graph.node if n.op_type in LAYER_OPS]

    def quantize(self, dest: Path, keep_fp32: list[str]) -> None:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        inputs = self.calibration

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{"images": inputs[i : i + 16]} for i in range(0, len(inputs), 16)])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        quantize_static(
            str(self.prepared), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type={8: QuantType.QUInt8, 16: QuantType.QUInt16}[self.activation_bits],
            weight_type={8: QuantType.QInt8, 16: QuantType.QInt16}[self.weight_bits],
            nodes_to_exclude=list(keep_fp32), calibration_cache_path=str(self.cache),
        )  # fmt: skip


@dataclass
class RefitData:
    """Model inputs and labels to fit the head on (training images) and to choose its C on (validation images)."""

    train_inputs: np.ndarray
    train_labels: np.ndarray
    val_inputs: np.ndarray
    val_labels: np.ndarray


@dataclass
class LinearHead:
    """The run's linear head in the graph (one Gemm, or a MatMul and its bias Add) and how to refit it."""

    node: str
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]  # train x, y, val x, y -> HeadParams

    def refit(self, model_path: Path, data: RefitData) -> None:
        """Fit the head again on ``model_path``'s own features and write it into the file."""
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(model_path))
        node = next(n for n in model.graph.node if n.name == self.node)
        train, val = _tensor_values(model_path, node.input[0], data.train_inputs, data.val_inputs)
        head = self.fit(train, data.train_labels, val, data.val_labels)
        weight, bias = head.weights[0], head.biases[0]  # (in, out), (out,)
        inits = {i.name: i for i in model.graph.initializer}
        found = _head_parameters(model.graph, node)
        assert found is not None, "linear_head() found these parameters in the same graph"
        w_name, b_name, transposed = found
        if transposed:
            weight = weight.T
        for name, value in ((w_name, weight), (b_name, bias)):
            old = numpy_helper.to_array(inits[name])
            inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value, dtype=old.dtype).reshape(old.shape), name))
        onnx.save(model, str(model_path))


def linear_head(run: Any, graph: Any) -> tuple[LinearHead | None, str]:
    """The run's head as a :class:`LinearHead` when scikit-learn fitted it on frozen features, else why not."""
    from tlzoo.training.config import TrainConfig

    if run.meta.strategy != "feature-extract":
        return None, f"the head of a {run.meta.strategy} run was trained with its backbone"
    try:
        config = TrainConfig.load(run.files.config)
    except Exception as exc:  # a damaged config.yaml: quantize without the refit
        return None, f"the run's config cannot be read ({type(exc).__name__})"
    if config.head not in LINEAR_HEADS:
        return None, f"the {config.head} head is not a linear head"
    n_classes = len(run.classes)
    nodes = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    found = _head_parameters(graph, nodes[-1]) if nodes else None
    dims = {i.name: tuple(i.dims) for i in graph.initializer}
    if found is None or len(dims[found[0]]) != 2 or dims[found[0]][0 if found[2] else 1] != n_classes:
        return None, "the head's dense layer was not found in the graph"

    def fit(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray) -> Any:
        return fit_head(config.head, x, y, xv, yv, n_classes, c=config.c, seed=config.seed)

    return LinearHead(nodes[-1].name, fit), ""


def fit_head(kind: str, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, n_classes: int, *,
             c: float | None, seed: int) -> Any:  # fmt: skip
    """The head as training fits it: with ``c`` when the run was given one, else with the C of tlzoo's grid
    that does best on the validation features (:func:`tlzoo.heads.choose_c`)."""
    from tlzoo.heads import C_GRID, choose_c, fit_linear

    if c is not None:
        return fit_linear(kind, x, y, n_classes, c=float(c), seed=seed)
    return choose_c(kind, x, y, xv, yv, n_classes, C_GRID, seed=seed)[1]


def _head_parameters(graph: Any, node: Any) -> tuple[str, str, bool] | None:
    """(weight initializer, bias initializer, weight stored as (out, in)) of a dense layer, or None."""
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            return None
        return node.input[1], node.input[2], trans_b
    if node.op_type == "MatMul" and node.input[1] in inits:
        for other in graph.node:
            if other.op_type == "Add" and node.output[0] in other.input:
                bias = [i for i in other.input if i != node.output[0] and i in inits]
                if bias:
                    return node.input[1], bias[0], False
    return None


def _tensor_values(model_path: Path, tensor: str, *inputs: np.ndarray, batch: int = 32) -> list[np.ndarray]:
    """One intermediate tensor of a model (made an extra graph output), for each array of inputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    if tensor not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [run_batched(session, array, tensor, batch).reshape(len(array), -1).astype(np.float64) for array in inputs]


def speedup(fp32: Path, int8: Path, x: np.ndarray, rounds: int = 5, runs: int = 10) -> float:
    """How many times faster ``int8`` runs than ``fp32`` on input ``x``: the median per-call time of each,
    measured in alternated rounds (so a machine that slows down mid-way slows both)."""
    import time

    sessions = [_session(fp32), _session(int8)]
    name = sessions[0].get_inputs()[0].name
    times: list[list[float]] = [[], []]
    for s in sessions:
        for _ in range(3):  # warm-up: the first calls allocate
            s.run(None, {name: x})
    for r in range(rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            for _ in range(runs):
                t0 = time.perf_counter()
                sessions[i].run(None, {name: x})
                times[i].append(time.perf_counter() - t0)
    return float(np.median(times[0]) / np.median(times[1]))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_batched(session: Any, inputs: np.ndarray, output: str | None = None, batch: int = 32) -> np.ndarray:
    """One output of an onnxruntime session (its first when None) over ``inputs``, batch by batch; a model
    with a fixed batch size gets its last batch padded with copies of the last input."""
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else batch
    out = []
    for i in range(0, len(inputs), step):
        chunk = inputs[i : i + step]
        pad = step - len(chunk) if isinstance(fixed, int) else 0
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        values = session.run([output] if output else None, {"images": chunk})[0]
        out.append(values[: len(values) - pad])
    return np.concatenate(out)


def sensitivity_order(quantizer: Quantizer, layers: list[str], fixed: list[str],
                      accuracy: Callable[[Path], tuple[float, float]], tmp: Path) -> list[str]:
    """``layers``, the one whose quantization costs most first: ranked by the output distance to fp32 with
    that layer alone left in fp32 (and ``fixed``; no head refit: a ranking, not a result)."""
    probe = tmp / "probe.onnx"
    distance = {}
    for name in layers:
        quantizer.quantize(probe, fixed + [name])
        distance[name] = accuracy(probe)[1]
    return sorted(layers, key=lambda n: (distance[n], layers.index(n)))


def quantize_within(quantizer: Quantizer, dest: Path, *, head: LinearHead | None, refit: RefitData | None,
                    accuracy: Callable[[Path], tuple[float, float]], fp32_accuracy: float, max_drop: float | None,
                    tmp: Path) -> Int8Result:  # fmt: skip
    """Quantize into ``dest``, refitting ``head`` on ``refit``'s images, then keep the most
    sensitive layers in fp32 until the accuracy drop on the validation images is within ``max_drop``
    points (None: no search). ``accuracy(path)`` gives (accuracy, mean L1 distance to fp32 probabilities)."""
    fixed = [head.node] if head is not None else []
    layers = [n for n in quantizer.layers() if n not in fixed]
    result = Int8Result(layers=len(layers) + len(fixed), head_refit=head is not None)

    def trial(keep: list[str], path: Path) -> float:
        quantizer.quantize(path, fixed + keep)
        if head is not None and refit is not None:
            head.refit(path, refit)
        acc, _ = accuracy(path)
        result.trials.append({"kept_fp32": len(fixed) + len(keep), "accuracy": acc,
                              "drop_points": round(100 * (fp32_accuracy - acc), 3)})  # fmt: skip
        return acc

    def within(acc: float) -> bool:
        return max_drop is None or 100 * (fp32_accuracy - acc) <= max_drop + 1e-9

    acc = trial([], dest)
    result.first_accuracy = acc
    if within(acc) or not layers:
        result.kept_fp32 = fixed
        return result
    order = sensitivity_order(quantizer, layers, fixed, accuracy, tmp)
    low, k = 0, 1
    high: int | None = None
    while high is None:  # doubling: the first count of layers kept in fp32 that is within
        k = min(k, len(order))
        if within(trial(order[:k], tmp / f"keep{k}.onnx")):
            high = k
        elif k == len(order):
            high = k  # not within even with every layer in fp32 (other ops stay quantized): report it
        else:
            low, k = k, 2 * k
    assert high is not None
    while high - low > 1:  # bisection between the last count that failed and the first that passed
        mid = (low + high) // 2
        if within(trial(order[:mid], tmp / f"keep{mid}.onnx")):
            high = mid
        else:
            low = mid
    (tmp / f"keep{high}.onnx").replace(dest)
    result.kept_fp32 = fixed + order[:high]
    return result
