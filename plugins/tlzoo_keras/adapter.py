"""The Keras framework adapter (see :class:`tlzoo.adapters.FrameworkAdapter`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlzoo.adapters import FrameworkAdapter
from tlzoo.errors import UsageError

from . import train as keras_train
from .backend import KerasBackbone
from .quiet import keras


class KerasAdapter(FrameworkAdapter):
    model_file = keras_train.MODEL_FILE
    engine_class = keras_train.KerasEngine
    train_mlp = staticmethod(keras_train.train_mlp)

    def seed(self, seed: int) -> None:
        keras.utils.set_random_seed(seed)

    def set_threads(self, threads: int) -> None:
        import tensorflow as tf

        threading = tf.config.threading
        if threading.get_intra_op_parallelism_threads() == threads:
            return
        try:
            threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow fixes its thread pools when it first runs an operation
            raise UsageError(f"TensorFlow has already started in this process with its own thread count; "
                             f"--threads {threads} applies to a new process") from None

    def wrap(self, spec: Any, model: Any, input_size: tuple[int, int], weights: Any) -> KerasBackbone:
        return KerasBackbone(spec, model, input_size, weights)

    def load_classifier(self, run_dir: Path, meta: Any) -> Any:
        return keras_train.load_classifier(run_dir)

    def classifier_from_head(self, backbone: Any, tap: int | None, head: Any) -> Any:
        return keras_train.assemble(backbone.feature_model(tap), head.sizes, head.dropout, head, backbone.spec.name)

    def classifier_logits(self, model: Any, batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(batch, training=False))

    def inference_device(self, request: str) -> str:
        return keras_train.select_device(request)

    def download(self, weights: Any, dest: Path) -> None:
        keras.utils.get_file(
            weights.file_name, weights.url, file_hash=weights.file_hash,
            cache_dir=str(dest.parent.parent), cache_subdir=dest.parent.name,
        )  # fmt: skip

    def converter(self, format: str) -> Callable[..., None] | None:
        if format == "onnx":
            from .onnx_export import convert

            return convert
        return None
