"""The ``onnxruntime`` feature engine: a frozen backbone exported once to ONNX, checked, cached, and run by
onnxruntime for feature extraction (``tlzoo train --feature-engine onnxruntime``).

The export is asked of the backbone's framework adapter (``converter("onnx")`` with ``output="features"``),
so any framework with an ONNX converter gets the engine. The file is cached by backbone, weights, tap, input
size and tlzoo version; a new file must reproduce the framework's own features on a check batch before it is
kept, and a cached one is checked again when it is opened. On a CUDA machine with TensorRT the engine first
tries TensorRT in fp16, kept when its features pass a looser check (:data:`HALF_ATOL`), else runs in fp32.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tlzoo.errors import UsageError, one_line

from . import DEFAULT_OPSET as OPSET  # the exporter's: torch's exporter writes it without a version conversion
ATOL = 1e-3  # relative to the features' scale: float32 graphs reorder sums, nothing more
HALF_ATOL = 1e-2  # TensorRT in fp16 (as the torch engine's fp16 on a GPU: tlzoo_torch.backend.HALF_TOLERANCE)
CPU, TENSORRT = "CPUExecutionProvider", "TensorrtExecutionProvider"


def engine(backbone: Any, tap: int | None, cache_dir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping a preprocessed NHWC float32 batch to the backbone's pooled features."""
    from tlzoo.adapters import adapter_for, framework_spec
    from tlzoo.files import atomic_write

    spec = backbone.spec
    convert = adapter_for(spec.framework).converter("onnx")
    if convert is None:
        raise UsageError(f"--feature-engine onnxruntime: the {spec.framework} framework plugin has no ONNX converter; "
                         f"use --feature-engine framework")  # fmt: skip
    layout = framework_spec(spec.framework).input_layout
    h, w = backbone.input_size
    path = _cached_path(backbone, tap, cache_dir)
    probe = _probe(h, w)
    model = backbone.feature_model(tap)  # a tap is traced by torch.fx: once, for the check and the export
    expected = backbone._run(model, probe)
    if path.is_file():
        try:
            return Engine(_best_runner(path, layout, probe, expected, spec.id), path, layout, (h, w), expected, spec.id)
        except UsageError:
            path.unlink(missing_ok=True)  # damaged or stale: export again

    def write(tmp: Path) -> None:
        try:
            convert(model, tmp, input_size=(h, w), preprocessing=spec.preprocessing,
                    output="features", opset=OPSET, batch=None, raw_input=False)  # fmt: skip
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"--feature-engine onnxruntime: {spec.id} could not be exported to ONNX "
                             f"({type(exc).__name__}: {one_line(exc, 200)}); "
                             f"use --feature-engine framework") from exc  # fmt: skip
        _check(_runner(tmp, layout, [CPU]), probe, expected, spec.id, ATOL)  # the file itself, in fp32

    atomic_write(path, write)
    return Engine(_best_runner(path, layout, probe, expected, spec.id), path, layout, (h, w), expected, spec.id)


class Engine:
    """An opened export; :attr:`entry` is what :func:`reopen` needs to open it again without the framework."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], path: Path, layout: str, size: tuple[int, int],
                 expected: np.ndarray, backbone_id: str, sha256: str | None = None) -> None:  # fmt: skip
        self.run, self.path, self.layout, self.size = run, path, layout, size
        self.expected, self.backbone_id, self._sha256 = expected, backbone_id, sha256

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)

    @property
    def entry(self) -> dict[str, Any]:
        """Plain data: the file, its sha256 (hashed here, once, only when asked: an export can be large) and the
        framework's features on the check batch."""
        if self._sha256 is None:
            from tlzoo.weights import file_digest

            self._sha256 = file_digest(self.path, "sha256")
        expected = [[float(v) for v in row] for row in np.asarray(self.expected, np.float32)]
        return {"file": self.path.name, "sha256": self._sha256, "layout": self.layout, "backbone": self.backbone_id,
                "size": list(self.size), "expected": expected}  # fmt: skip


def reopen(entry: dict[str, Any], cache_dir: Path) -> Engine:
    """The export an earlier run opened (its :class:`Engine`'s ``entry``), opened again without the backbone's
    framework: the file must have the recorded sha256 and reproduce the framework's features on the same check
    batch, recorded then. Raises UsageError when anything does not match."""
    from tlzoo.weights import file_digest

    try:
        path = Path(cache_dir) / str(entry["file"])
        sha256 = str(entry["sha256"])
        if path.name != entry["file"] or not path.is_file() or file_digest(path, "sha256") != sha256:
            raise UsageError(f"the cached export {path.name} is gone or changed")
        layout, backbone_id = str(entry["layout"]), str(entry["backbone"])
        expected = np.asarray(entry["expected"], np.float32)
        h, w = (int(v) for v in entry["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"a malformed engine record ({type(exc).__name__})") from None
    run = _best_runner(path, layout, _probe(h, w), expected, backbone_id)
    return Engine(run, path, layout, (h, w), expected, backbone_id, sha256)


def _probe(h: int, w: int) -> np.ndarray:
    """The check batch a new or cached export must give the framework's features on."""
    return np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)


def prepared(backbone: Any, tap: int | None, cache_dir: Path) -> bool:
    """Whether this backbone's export is in the cache (``--feature-engine auto`` then tries it on any job)."""
    return _cached_path(backbone, tap, cache_dir).is_file()


def _cached_path(backbone: Any, tap: int | None, cache_dir: Path) -> Path:
    """Where the export of ``backbone`` at ``tap`` is kept: by backbone, weights, tap, input size and tlzoo version."""
    from tlzoo.version import __version__

    spec = backbone.spec
    h, w = backbone.input_size
    key = hashlib.sha256(
        f"{spec.id}|{backbone.weights_digest()}|{tap}|{h}x{w}|{OPSET}|{__version__}".encode()
    ).hexdigest()[:20]  # fmt: skip
    return Path(cache_dir) / f"{spec.id.replace('/', '-')}-{key}.onnx"


def _best_runner(path: Path, layout: str, probe: np.ndarray, expected: np.ndarray,
                 backbone_id: str) -> Callable[[np.ndarray], np.ndarray]:  # fmt: skip
    """The file run by the fastest plan of :func:`_plans` whose features pass the check."""
    failure: UsageError | None = None
    for providers, atol in _plans():
        try:
            run = _runner(path, layout, providers)
            _check(run, probe, expected, backbone_id, atol)
            return run
        except UsageError as exc:
            failure = exc
    assert failure is not None, "_plans() ends with fp32"
    raise failure


def _plans() -> list[tuple[list[Any], float]]:
    """(providers, allowed feature difference), fastest first: on a CUDA machine TensorRT in fp16 where it is
    installed, then the GPU providers in fp32; elsewhere the CPU."""
    from .predictor import _cuda_driver_present, provider_chain

    if not _cuda_driver_present():
        return [([CPU], ATOL)]
    chain = provider_chain("auto")
    fp16 = [(p[0], {**p[1], "trt_fp16_enable": True}) if isinstance(p, tuple) and p[0] == TENSORRT else p for p in chain]
    return ([(fp16, HALF_ATOL)] if fp16 != chain else []) + [(chain, ATOL)]


def _runner(path: Path, layout: str, providers: list[Any]) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # onnxruntime's idle threads spin after each batch by default, taking the cores from the image decoding
    # that runs alongside, and from the framework while --feature-engine auto times the two in turn
    # (torch at 64 px measured 0.5x its speed between onnxruntime batches with spinning, 1.0x without).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise UsageError(f"{path} is not a model onnxruntime can load ({type(exc).__name__}); delete it and run again") from None
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        x = batch.transpose(0, 3, 1, 2) if layout == "NCHW" else batch
        return np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0])

    return run


def _check(run: Callable[[np.ndarray], np.ndarray], probe: np.ndarray, expected: np.ndarray, backbone_id: str,
           atol: float) -> None:  # fmt: skip
    got = run(probe)
    scale = max(float(np.abs(expected).max()), 1.0)
    diff = float(np.abs(got - expected).max()) / scale if got.shape == expected.shape else float("inf")
    if not diff <= atol:
        raise UsageError(f"--feature-engine onnxruntime: the ONNX export of {backbone_id} does not reproduce its "
                         f"features (max relative difference {diff:.2e}, allowed {atol:.0e}); "
                         f"use --feature-engine framework")  # fmt: skip
