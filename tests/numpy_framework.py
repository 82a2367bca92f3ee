"""A third framework, written against tlzoo's public contract only: numpy.

The "backbone" pools an image to a 4x4 grid and projects it through a fixed random
matrix with a ReLU: no optimizer, so it offers feature extraction with the linear
heads, and refuses what it cannot do (fine-tuning, the MLP head) in one clear line.
Loaded with ``--plugin numpy_framework`` (or ``TLZOO_PLUGINS``); tlzoo's core is not
touched, and torch and TensorFlow are never imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import tlzoo
from tlzoo.adapters import FrameworkAdapter
from tlzoo.backbone import Backbone, Unit
from tlzoo.errors import UsageError
from tlzoo.files import atomic_write
from tlzoo.specs import TORCHVISION_IMAGENET
from tlzoo.training.engine import Engine
from tlzoo.heads import HeadParams

GRID = 4
FEATURES = 16
NEEDS_OPTIMIZER = "the numpy framework has no optimizer: use --strategy feature-extract with a linear --head"

SPEC = tlzoo.BackboneSpec(
    name="randproj",
    framework="numpy",
    builder="numpy_framework:build",
    input_size=(32, 32),
    min_input_size=8,
    feature_dim=FEATURES,
    num_params=GRID * GRID * 3 * FEATURES,
    preprocessing=TORCHVISION_IMAGENET,
    units=(tlzoo.UnitSpec("projection", "RandomProjection", GRID * GRID * 3 * FEATURES),),
    description="A fixed random projection of a 4x4 pooled image (a third-framework example)",
)


class Projection:
    """The framework's own "model": a weight matrix and a forward function."""

    def __init__(self, weight: np.ndarray) -> None:
        self.weight = weight

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # NHWC float32
        n, h, w, c = batch.shape
        pooled = batch[:, : h - h % GRID, : w - w % GRID].reshape(n, GRID, h // GRID, GRID, w // GRID, c).mean(axis=(2, 4))
        return np.maximum(pooled.reshape(n, -1) @ self.weight, 0.0).astype(np.float32)


def build(spec: tlzoo.BackboneSpec, weights: str | None, input_size: tuple[int, int]) -> Projection:
    if weights is not None:
        with np.load(weights, allow_pickle=False) as f:
            return Projection(f["weight"])
    return Projection(np.random.default_rng(_seed[0]).standard_normal((GRID * GRID * 3, FEATURES)).astype(np.float32))


_seed = [0]


class NumpyBackbone(Backbone):
    def __init__(self, spec: Any, model: Any, input_size: tuple[int, int], weights: Any) -> None:
        if not isinstance(model, Projection):
            raise UsageError(f"builder of {spec.id} returned {type(model).__name__}, not a numpy_framework.Projection")
        super().__init__(spec, model, input_size, weights)

    @property
    def units(self) -> list[Unit]:
        return [Unit(index=1, name="projection", kind="RandomProjection", params=int(self.model.weight.size))]

    @property
    def num_params(self) -> int:
        return int(self.model.weight.size)

    @property
    def trainable_params(self) -> int:
        return 0 if self.frozen_units else self.num_params

    def _freeze_units(self, count: int, whole: bool, all_norms: bool) -> None:
        pass  # nothing here ever trains

    def feature_model(self, tap: int | None = None) -> Projection:
        return self.model  # one unit: its tap is the final features

    def parameter_arrays(self) -> list[np.ndarray]:
        return [self.model.weight]

    def _run(self, model: Any, batch: np.ndarray) -> np.ndarray:
        return model(batch)  # type: ignore[no-any-return]


class Classifier:
    def __init__(self, projection: Projection, head: HeadParams) -> None:
        self.projection, self.head = projection, head

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.head.logits(self.projection(batch)).astype(np.float32)


class NumpyEngine(Engine):
    state_suffix = ".npz"

    @property
    def device(self) -> str:
        return "cpu"

    def build(self, head: HeadParams | None = None) -> None:
        if head is None:
            raise UsageError(NEEDS_OPTIMIZER)
        self.model = Classifier(self.backbone.model, head)
        self.output = head.output

    def configure(self, **_: Any) -> None:
        raise UsageError(NEEDS_OPTIMIZER)

    def set_lr_factor(self, factor: float) -> None:
        raise UsageError(NEEDS_OPTIMIZER)

    def train_epoch(self, *args: Any, **kwargs: Any) -> tuple[float, float]:
        raise UsageError(NEEDS_OPTIMIZER)

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return np.concatenate([self.model(self.backbone.preprocess(images[i : i + batch_size]))
                               for i in range(0, len(images), batch_size)])  # fmt: skip

    def save_model(self, run_dir: Path) -> Path:
        path = Path(run_dir) / NumpyAdapter.model_file
        head = self.model.head
        arrays = {"weight": self.model.projection.weight, "output": np.array(head.output)}
        arrays.update({f"w{i}": w for i, w in enumerate(head.weights)})
        arrays.update({f"b{i}": b for i, b in enumerate(head.biases)})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(path, write)
        return path

    def save_state(self, path: Path, extra: dict[str, Any]) -> None:
        raise UsageError(NEEDS_OPTIMIZER)

    def load_state(self, path: Path) -> dict[str, Any]:
        raise UsageError(NEEDS_OPTIMIZER)

    def peek_state(self, path: Path) -> dict[str, Any]:
        raise UsageError(NEEDS_OPTIMIZER)

    def load_model_weights(self, run_dir: Path) -> None:
        self.model = NumpyAdapter().load_classifier(Path(run_dir), None)

    def trainable_params(self) -> int:
        return int(sum(w.size + b.size for w, b in zip(self.model.head.weights, self.model.head.biases)))

    def head_meta(self) -> dict[str, Any]:
        return {"sizes": self.model.head.sizes, "dropout": 0.0}


class NumpyAdapter(FrameworkAdapter):
    model_file = "model.npz"

    def seed(self, seed: int) -> None:
        _seed[0] = seed

    def wrap(self, spec: Any, model: Any, input_size: tuple[int, int], weights: Any) -> NumpyBackbone:
        return NumpyBackbone(spec, model, input_size, weights)

    def engine(self, backbone: Any, n_classes: int, *, tap: int | None, dropout: float, seed: int,
               device: str) -> NumpyEngine:  # fmt: skip
        if device not in ("auto", "cpu"):
            raise UsageError(f"--device {device}: the numpy framework runs on the CPU only")
        return NumpyEngine(backbone, n_classes, tap=tap, dropout=dropout, seed=seed, device=device)

    def train_mlp(self, *args: Any, **kwargs: Any) -> Any:
        raise UsageError(NEEDS_OPTIMIZER)

    def load_classifier(self, run_dir: Path, meta: Any) -> Classifier:
        with np.load(Path(run_dir) / self.model_file, allow_pickle=False) as f:
            count = len([k for k in f.files if k[:1] == "w" and k[1:].isdigit()])
            head = HeadParams(weights=[f[f"w{i}"] for i in range(count)], biases=[f[f"b{i}"] for i in range(count)],
                              output=str(f["output"]))  # fmt: skip
            return Classifier(Projection(f["weight"]), head)

    def classifier_logits(self, model: Any, batch: np.ndarray) -> np.ndarray:
        return model(batch)  # type: ignore[no-any-return]


@tlzoo.hookimpl
def register_frameworks() -> list[tlzoo.FrameworkSpec]:
    return [tlzoo.FrameworkSpec(name="numpy", adapter="numpy_framework:NumpyAdapter", input_layout="NHWC",
                                description="numpy: a fixed random projection, feature extraction only")]  # fmt: skip


@tlzoo.hookimpl
def register_backbones() -> list[tlzoo.BackboneSpec]:
    return [SPEC]
