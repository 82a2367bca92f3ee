"""Training a Keras classifier with a custom TensorFlow step: two optimizers, so the backbone
can learn at a fraction of the head's learning rate (Keras has no per-layer rates)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from collections.abc import Generator
from typing import Any, Callable

import numpy as np  # noqa: E402

from .quiet import keras, tf  # noqa: E402  (TensorFlow without its start-up noise)

from tlzoo.files import atomic_write  # noqa: E402
from tlzoo.specs import Preprocessing  # noqa: E402
from tlzoo.training.engine import Engine, ProgressFn  # noqa: E402
from tlzoo.images.feed import Prefetcher
from tlzoo.training.engine import CHECK_EVERY, check_finite  # noqa: E402
from tlzoo.heads import HeadParams  # noqa: E402

MODEL_FILE = "model.keras"


def normalize(x: tf.Tensor, prep: Preprocessing) -> tf.Tensor:
    """RGB uint8 NHWC -> float NHWC, the same arithmetic as :func:`tlzoo.images.normalize.normalize`."""
    x = tf.cast(x, tf.float32)
    if prep.channel_order == "BGR":
        x = x[..., ::-1]
    if prep.value_range != 255.0:
        x = x * (prep.value_range / 255.0)
    return (x - tf.constant(prep.mean, tf.float32)) / tf.constant(prep.std, tf.float32)


def make_head(x: Any, sizes: list[int], dropout: float, params: HeadParams | None = None) -> Any:
    dense_layers = []
    for i in range(len(sizes) - 1):
        x = keras.layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
        layer = keras.layers.Dense(sizes[i + 1], activation="relu" if i < len(sizes) - 2 else None, name=f"head_dense_{i}")
        x = layer(x)
        dense_layers.append(layer)
    if params is not None:
        for layer, w, b in zip(dense_layers, params.weights, params.biases):
            layer.set_weights([w, b])
    return x


def assemble(features: keras.Model, sizes: list[int], dropout: float, head: HeadParams | None, name: str) -> keras.Model:
    """The classifier: ``features`` followed by the head's dense layers (``head``'s weights when given)."""
    return keras.Model(features.input, make_head(features.output, sizes, dropout, head), name=f"tlzoo_{name}")


def _tensors_on(device: str, x: np.ndarray, y: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """A gathered batch as tensors on ``device`` (copied there on the feed's thread, ahead of its step)."""
    with tf.device(device):
        return tf.identity(x), tf.identity(y)


def mixed_policy() -> str | None:
    """The mixed-precision policy a run on this process's GPU trains in: ``mixed_bfloat16`` where the GPU has
    bf16 (compute capability 8.0 and later), else ``mixed_float16`` with loss scaling; None on the CPU (float32)."""
    gpus = tf.config.get_visible_devices("GPU")
    if not gpus:
        return None
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
    return "mixed_bfloat16" if tuple(capability) >= (8, 0) else "mixed_float16"


def with_policy(model: keras.Model, policy: str) -> keras.Model:
    """A copy of ``model`` whose layers compute in ``policy`` (their variables stay float32 in every policy),
    with ``model``'s weights and trainable flags."""

    def clone(layer: Any) -> Any:
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    for mine, theirs in zip(copy.layers, model.layers):
        mine.trainable = theirs.trainable
    return copy


# fp16's dynamic loss scale (what keras.optimizers.LossScaleOptimizer does, for the two optimizers together: the
# loss is scaled once, so the head's and the backbone's gradients share one scale and skip a step together).
LOSS_SCALE_START = 2.0**15
LOSS_SCALE_GROW_EVERY = 2000


def _optimizer(name: str, lr: float, momentum: float, nesterov: bool, weight_decay: float) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, nesterov=nesterov)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)


def select_device(request: str) -> str:
    """Keras places work itself: ``cpu`` hides the GPUs, and a GPU asked for by name (``gpu``, ``cuda``,
    ``cuda:N``, ``N``) must exist and is the one left visible. Returns where work then runs (``gpu`` or ``cpu``)."""
    from tlzoo.errors import UsageError

    text = request.strip().lower()
    gpus = tf.config.list_physical_devices("GPU")
    if text == "cpu":
        _show_only([], request)
    elif text != "auto":
        if text.isdigit() or text in ("gpu", "cuda") or text.startswith("cuda:"):
            index = int(text.rpartition(":")[2]) if ":" in text else int(text) if text.isdigit() else 0
            if index >= len(gpus):
                raise UsageError(f"--device {request}: TensorFlow sees {len(gpus)} GPU(s) on this machine; "
                                 f"use --device cpu (or auto)")  # fmt: skip
            _show_only([gpus[index]], request)
        else:
            raise UsageError(f"--device {request!r} is not a device for Keras: use auto, cpu, gpu or N")
    return "gpu" if tf.config.get_visible_devices("GPU") else "cpu"


def _show_only(gpus: list[Any], request: str) -> None:
    """Leave TensorFlow only ``gpus``. Once TensorFlow has started its devices in this process they cannot
    change: that is fine where they already are these, and refused where they are not (never silently)."""
    from tlzoo.errors import UsageError

    try:
        tf.config.set_visible_devices(gpus, "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices in this process
        visible = tf.config.get_visible_devices("GPU")
        if list(visible) != list(gpus):
            raise UsageError(f"--device {request}: TensorFlow already runs on {len(visible)} GPU(s) in this process "
                             f"and cannot change them now; choose the device in a new process") from None  # fmt: skip


class KerasEngine(Engine):
    state_suffix = ".npz"
    can_compile = True  # XLA: the training step's update (forward, backward, optimizer) under jit_compile

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.strategy: Any = None
        self._apply_device()
        keras.utils.set_random_seed(self.seed)
        self.model: keras.Model | None = None
        self.head_vars: list[Any] = []
        self.body_vars: list[Any] = []
        self.optimizers: list[tuple[keras.optimizers.Optimizer, list[Any], float]] = []
        self._step: Any = None
        self._feed: Prefetcher[Any] | None = None
        # On a GPU, mixed precision (export and saved model stay float32); None: float32 throughout.
        self.policy = mixed_policy() if self.device == "gpu" and self.strategy is None else None
        self.loss_scale: Any = None  # fp16's (see LOSS_SCALE_START)
        self._good_steps: Any = None

    @property
    def device(self) -> str:
        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"

    def _apply_device(self) -> None:
        if "," in self.device_request:
            self._mirror([int(t) for t in self.device_request.split(",")], tf.config.list_physical_devices("GPU"))
        else:
            select_device(self.device_request)

    def _mirror(self, indices: list[int], gpus: list[Any]) -> None:
        """``--device 0,1``: one replica per GPU in this process (tf.distribute.MirroredStrategy)."""
        from tlzoo.errors import UsageError

        logical_cpus = tf.config.list_logical_devices("CPU")
        if gpus:
            if max(indices) >= len(gpus):
                raise UsageError(f"--device {self.device_request}: TensorFlow sees {len(gpus)} GPU(s), numbered "
                                 f"0..{len(gpus) - 1}")  # fmt: skip
            devices = [f"/gpu:{i}" for i in indices]
        elif len(logical_cpus) > max(indices):  # the test hook's logical CPUs (keras_quiet.CPU_REPLICAS_ENV)
            devices = [f"/cpu:{i}" for i in indices]
        else:
            raise UsageError(f"--device {self.device_request}: TensorFlow sees no GPU on this machine; use one "
                             f"device (--device cpu or auto)")  # fmt: skip
        self.strategy = tf.distribute.MirroredStrategy(devices)
        self.job_info = {"world_size": 1, "replicas": len(devices), "strategy": "tf.distribute.MirroredStrategy",
                         "devices": devices}  # fmt: skip

    def _scope(self) -> Any:
        from contextlib import nullcontext

        return self.strategy.scope() if self.strategy is not None else nullcontext()

    def build(self, head: HeadParams | None = None) -> None:
        features = self.backbone.feature_model(self.tap)
        with self._scope():
            if self.strategy is not None:
                # Variables must be made in the strategy's scope to be mirrored: a copy of the (frozen as
                # configured) backbone, with its weights.
                source = features
                features = keras.models.clone_model(source)
                features.set_weights(source.get_weights())
            dim = int(features.output.shape[-1])
            sizes = head.sizes if head is not None else [dim, self.n_classes]
            dropout = head.dropout if head is not None else self.dropout
            if head is not None:
                self.output = head.output
            self.model = assemble(features, sizes, dropout, head, self.backbone.spec.name)
            if self.policy is not None:
                self.model = with_policy(self.model, self.policy)
        self.head_names = {f"head_dense_{i}" for i in range(len(sizes) - 1)}
        if self.policy == "mixed_float16" and self.loss_scale is None:
            self.loss_scale = tf.Variable(LOSS_SCALE_START, trainable=False, dtype=tf.float32, name="loss_scale")
            self._good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="good_steps")

    def configure(self, *, lr: float, backbone_lr_mult: float, optimizer: str, momentum: float, nesterov: bool,
                  weight_decay: float) -> None:  # fmt: skip
        assert self.model is not None
        head_layers = [layer for layer in self.model.layers if layer.name in self.head_names]
        head_ids = {id(v) for layer in head_layers for v in layer.trainable_weights}
        self.head_vars = [v for v in self.model.trainable_weights if id(v) in head_ids]
        self.body_vars = [v for v in self.model.trainable_weights if id(v) not in head_ids]
        if backbone_lr_mult <= 0:
            self.body_vars = []
        with self._scope():
            self.optimizers = [(_optimizer(optimizer, lr, momentum, nesterov, weight_decay), self.head_vars, lr)]
            if self.body_vars:
                body_lr = lr * backbone_lr_mult
                self.optimizers.append((_optimizer(optimizer, body_lr, momentum, nesterov, weight_decay), self.body_vars, body_lr))
            for opt, variables, _ in self.optimizers:
                opt.build(variables)
        self._step = None

    def set_lr_factor(self, factor: float) -> None:
        for opt, _, base in self.optimizers:
            opt.learning_rate.assign(base * factor)

    def _reseed_layers(self, epoch: int) -> None:
        """Dropout and the random augmentation layers draw from their own seed generators, which a checkpoint
        does not hold: their state becomes a function of (seed, epoch), so a resumed run repeats the
        uninterrupted one."""
        base = self.epoch_seed(epoch) % (2**31)
        roots = [m for m in (self.model, getattr(self, "_augment_model", None)) if m is not None]
        index = 0
        for root in roots:
            for layer in root._flatten_layers(include_self=True):
                for value in vars(layer).values():
                    if isinstance(value, keras.random.SeedGenerator):
                        value.state.assign(np.array([base, index], dtype=value.state.dtype))
                        index += 1

    def _augmenter(self, augment: list[str]) -> keras.Sequential | None:
        layers: list[Any] = []
        if "crop" in augment:
            layers.append(keras.layers.RandomZoom(height_factor=(-0.4, 0.0), seed=self.seed))
        if "flip" in augment:
            layers.append(keras.layers.RandomFlip("horizontal", seed=self.seed))
        return keras.Sequential(layers) if layers else None

    def _replica_step(self, augmenter: keras.Sequential | None) -> Any:
        """One optimisation step on a batch (or, under MirroredStrategy, on one replica's slice of it): the loss
        is the sum over these images divided by the global batch, so replicas' gradients add up to the
        global-batch mean."""
        assert self.model is not None
        model, prep = self.model, self.backbone.spec.preprocessing
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
        n_head = len(self.head_vars)

        def step(images: tf.Tensor, labels: tf.Tensor, global_batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            x = tf.cast(images, tf.float32)
            if augmenter is not None:
                x = augmenter(x, training=True)
            return update(normalize(x, prep), labels, global_batch)

        scale, good = self.loss_scale, self._good_steps
        # --balance weights: each image's loss times its class's weight (made once, captured by the step)
        class_weights = None if self.class_weights is None else tf.constant(self.class_weights, tf.float32)
        multilabel = self.multilabel
        label_loss = multilabel_loss(self.pos_weight) if multilabel else None

        def apply(grads: list[tf.Tensor]) -> None:
            self.optimizers[0][0].apply_gradients(zip(grads[:n_head], self.head_vars))
            if self.body_vars:
                self.optimizers[1][0].apply_gradients(zip(grads[n_head:], self.body_vars))

        def update(x: tf.Tensor, labels: tf.Tensor, global_batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                logits = tf.cast(model(x, training=True), tf.float32)  # the loss in float32 in every policy
                # multi-label: binary cross-entropy per label, averaged over the labels (the MLP head's loss too)
                each = label_loss(labels, logits) if label_loss is not None else loss_fn(labels, logits)
                if class_weights is not None and not multilabel:
                    each = each * tf.gather(class_weights, labels)
                loss = tf.reduce_sum(each) / tf.cast(global_batch, tf.float32)
                scaled = loss * scale if scale is not None else loss
            grads = tape.gradient(scaled, self.head_vars + self.body_vars)
            if scale is None:
                apply(grads)
            else:  # fp16: unscale; a step whose gradients overflowed is skipped and the scale halved
                grads = [g / scale for g in grads]
                finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

                def step_taken() -> tf.Tensor:
                    apply(grads)
                    good.assign_add(1)
                    grow = good >= LOSS_SCALE_GROW_EVERY
                    scale.assign(tf.where(grow, scale * 2.0, scale))
                    good.assign(tf.where(grow, tf.zeros_like(good), good))
                    return tf.constant(True)

                def step_skipped() -> tf.Tensor:
                    scale.assign(tf.maximum(scale / 2.0, 1.0))
                    good.assign(0)
                    return tf.constant(False)

                tf.cond(finite, step_taken, step_skipped)
            if multilabel:  # the (image, label) pairs right at 0.5, as a share of the image's labels
                right = tf.cast(tf.equal(logits >= 0.0, labels > 0), tf.float64)
                correct = tf.reduce_sum(tf.reduce_mean(right, axis=1))
            else:
                correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int64), labels), tf.float64))
            return loss, correct

        if self.compiles:  # XLA for the model's forward, backward and update; the augmentation's image ops have
            update = tf.function(update, jit_compile=True, reduce_retracing=True)  # no XLA kernels on the CPU
        return step

    def _make_mirrored_step(self, augmenter: keras.Sequential | None) -> Any:
        """The step with one replica per device, losses and counts summed across replicas."""
        replica, strategy = self._replica_step(augmenter), self.strategy

        @tf.function(reduce_retracing=True)
        def step(images: Any, labels: Any, global_batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            loss, correct = strategy.run(replica, args=(images, labels, global_batch))
            total = tf.distribute.ReduceOp.SUM
            return strategy.reduce(total, loss, axis=None), strategy.reduce(total, correct, axis=None)

        return step

    def _make_step(self, augmenter: keras.Sequential | None) -> Any:
        replica = self._replica_step(augmenter)

        @tf.function(reduce_retracing=True)
        def step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return replica(images, labels, tf.shape(labels)[0])

        return step

    def _first_call_guarded(self, make: Callable[[Any], Any]) -> Any:
        """The XLA-compiled step; if compiling it fails at the first batch, :meth:`compile_failed` decides
        (an error under --compile on, else the step is made again uncompiled and the batch rerun)."""
        compiled = make(self._augment_model)

        def first(*args: Any) -> Any:
            try:
                out = compiled(*args)
            except Exception as exc:  # noqa: BLE001 - XLA's failures have no common type
                self.compile_failed(exc)
                self._step = make(self._augment_model)  # compiles is False now: a plain tf.function
                return self._step(*args)
            self._step = compiled
            return out

        return first

    def train_epoch(self, images: np.ndarray, labels: np.ndarray, *, batch_size: int, augment: list[str],
                    epoch: int, workers: int, progress: ProgressFn | None) -> tuple[float, float]:  # fmt: skip
        if self._step is None:
            with self._scope():
                self._augment_model = self._augmenter(augment)
            make = self._make_mirrored_step if self.strategy is not None else self._make_step
            self._step = self._first_call_guarded(make) if self.compiles else make(self._augment_model)
        self.seed_epoch(epoch)  # see TorchEngine.train_epoch
        tf.random.set_seed(self.epoch_seed(epoch))
        self._reseed_layers(epoch)
        # a store larger than memory is read a block at a time; --balance sampler draws the order class-balanced
        order = self.epoch_positions(images, np.asarray(labels), self.set_rng(epoch).permutation(len(labels)), epoch)
        from tlzoo.images.decode import available_cores

        threads = workers or (available_cores() if self.device == "gpu" else 1)  # as TorchEngine._feed_for
        if self._feed is None or self._feed.threads != threads or self._feed.closed:
            if self._feed is not None:
                self._feed.close()
            # Under MirroredStrategy tf.data splits each batch over the replicas; else each batch becomes a
            # tensor on the device on the thread that gathered it.
            if self.strategy is not None:
                self._feed = Prefetcher(threads)
            else:
                where = "/GPU:0" if self.device == "gpu" else "/CPU:0"
                self._feed = Prefetcher(threads, lambda x, y: _tensors_on(where, x, y))
        # Summed on the device and read once an epoch, a non-finite loss looked for every CHECK_EVERY steps.
        total, correct, seen = tf.zeros((), tf.float64), tf.zeros((), tf.float64), 0
        steps = self._steps(images, labels, order, batch_size)
        with contextlib.closing(steps):  # an error or Ctrl-C: nothing more is gathered
            for step, (n, (loss, right)) in enumerate(steps):
                total += tf.cast(loss, tf.float64) * n
                correct += tf.cast(right, tf.float64)
                seen += n
                if (step + 1) % CHECK_EVERY == 0:
                    check_finite(total, seen)
                if progress is not None:
                    progress(n)
        check_finite(total, seen)
        self.feed_seconds = self._feed.waited
        return float(total) / len(order), float(correct) / len(order)

    def _steps(self, images: Any, labels: np.ndarray, order: np.ndarray,
               batch_size: int) -> Generator[tuple[int, tuple[tf.Tensor, tf.Tensor]], None, None]:  # fmt: skip
        """``(images in the batch, (loss, correct))`` for each step of the epoch, batches from the feed."""
        assert self._feed is not None
        batches = self._feed.batches(images, labels, order, batch_size)
        if self.strategy is None:
            for x, y in batches:
                yield int(y.shape[0]), self._step(x, y)
            return
        # Never from_tensor_slices, which would copy the whole set and embed it in the graph as a constant.
        shape = (None, *images.shape[1:])
        data = tf.data.Dataset.from_generator(lambda: batches, output_signature=(
            tf.TensorSpec(shape, tf.uint8), tf.TensorSpec((None, *np.shape(labels)[1:]), tf.int64))).prefetch(2)  # fmt: skip
        sizes = [len(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
        for n, (x, y) in zip(sizes, self.strategy.experimental_distribute_dataset(data)):
            yield n, self._step(x, y, tf.constant(n))

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        assert self.model is not None
        prep = self.backbone.spec.preprocessing
        out = [
            np.asarray(tf.cast(self.model(normalize(tf.constant(images[i : i + batch_size]), prep), training=False),
                               tf.float32))  # fmt: skip
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out)

    can_scale_logits = True
    can_balance = True

    can_multilabel = True

    def scale_logits(self, factor: float | np.ndarray, shift: float | np.ndarray = 0.0) -> None:
        assert self.model is not None
        last = self.model.get_layer(f"head_dense_{len(self.head_names) - 1}")
        scale = np.broadcast_to(np.asarray(factor, np.float32), tuple(last.bias.shape))
        offset = np.broadcast_to(np.asarray(shift, np.float32), tuple(last.bias.shape))
        last.kernel.assign(last.kernel * scale[None, :])
        last.bias.assign(last.bias * scale + offset)

    def precision(self) -> str:
        return {None: "float32", "mixed_bfloat16": "bfloat16 (Keras mixed_bfloat16)",
                "mixed_float16": "float16 (Keras mixed_float16), loss scaling"}[self.policy]  # fmt: skip

    def save_model(self, run_dir: Path) -> Path:
        """The classifier in float32 whatever it trained in: what is exported and predicted with."""
        assert self.model is not None
        path = Path(run_dir) / MODEL_FILE
        model = self.model if self.policy is None else with_policy(self.model, "float32")
        atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")
        return path

    def save_state(self, path: Path, extra: dict[str, Any]) -> None:
        import json

        assert self.model is not None
        arrays = {f"model_{i}": np.asarray(v) for i, v in enumerate(self.model.weights)}
        for k, (opt, _, _) in enumerate(self.optimizers):
            arrays.update({f"opt{k}_{i}": np.asarray(v) for i, v in enumerate(opt.variables)})
        arrays["extra"] = np.frombuffer(json.dumps(extra).encode(), dtype=np.uint8)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]

        atomic_write(path, write)

    def load_state(self, path: Path) -> dict[str, Any]:
        import json

        assert self.model is not None
        with np.load(path, allow_pickle=False) as data:
            for i, v in enumerate(self.model.weights):
                v.assign(data[f"model_{i}"])
            for k, (opt, _, _) in enumerate(self.optimizers):
                for i, v in enumerate(opt.variables):
                    v.assign(data[f"opt{k}_{i}"])
            return dict(json.loads(bytes(data["extra"]).decode()))

    def peek_state(self, path: Path) -> dict[str, Any]:
        import json

        with np.load(path, allow_pickle=False) as data:
            return dict(json.loads(bytes(data["extra"]).decode()))

    def trainable_params(self) -> int:
        assert self.model is not None
        return int(sum(np.prod(w.shape) for w in self.model.trainable_weights))

    def load_model_weights(self, run_dir: Path) -> None:
        assert self.model is not None
        self.model.load_weights(Path(run_dir) / MODEL_FILE)


class _EpochDraws(keras.utils.PyDataset):
    """Batches of ``x[order]``, ``y[order]`` where ``order = epoch_order(epoch)`` is drawn again each epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, epoch_order: Callable[[int], np.ndarray]) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.epoch_order = x, y, batch_size, epoch_order
        self.epoch = 0  # the next epoch to draw (Keras may end an epoch more than once; it begins each once)
        self.order = np.asarray(epoch_order(0), np.int64)

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_begin(self) -> None:
        self.order = np.asarray(self.epoch_order(self.epoch), np.int64)
        self.epoch += 1


def multilabel_loss(pos_weight: np.ndarray | None) -> Callable[[Any, Any], Any]:
    """Binary cross-entropy on logits, averaged over labels, each label's positives weighed by ``pos_weight``."""
    weight = keras.ops.convert_to_tensor(pos_weight if pos_weight is not None else 1.0, "float32")

    def loss(y_true: Any, logits: Any) -> Any:
        y_true = keras.ops.cast(y_true, "float32")
        logits = keras.ops.cast(logits, "float32")
        each = -(weight * y_true * keras.ops.log_sigmoid(logits) + (1.0 - y_true) * keras.ops.log_sigmoid(-logits))
        return keras.ops.mean(each, axis=-1)

    return loss


def load_classifier(run_dir: Path) -> keras.Model:
    """The trained classifier, loaded in Keras' safe mode (no arbitrary code from the file)."""
    return keras.models.load_model(Path(run_dir) / MODEL_FILE, safe_mode=True, compile=False)


def train_mlp(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, sizes: list[int], *,
              dropout: float, epochs: int, lr: float, weight_decay: float, patience: int, batch_size: int,
              seed: int, on_epoch: Callable[[dict[str, Any]], None] | None,
              class_weight: np.ndarray | None = None, multilabel: bool = False, pos_weight: np.ndarray | None = None,
              epoch_order: Callable[[int], np.ndarray] | None = None) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:  # fmt: skip
    """Dense layers on standardized features (see :meth:`tlzoo.adapters.FrameworkAdapter.train_mlp`);
    ``multilabel``: ``y`` is a 0/1 matrix, the loss binary cross-entropy with ``pos_weight`` on each label's positives."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((sizes[0],))
    net = keras.Model(inputs, make_head(inputs, sizes, dropout))
    if multilabel:
        y, y_val = y.astype(np.float32), y_val.astype(np.float32)
        loss: Any = multilabel_loss(pos_weight)
        metric: Any = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)  # on logits: sigmoid >= 0.5
        class_weight = None
    else:
        loss, metric = keras.losses.SparseCategoricalCrossentropy(from_logits=True), "accuracy"
    net.compile(optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay), loss=loss,
                metrics=[metric])  # fmt: skip
    history: list[dict[str, Any]] = []

    def record(epoch: int, logs: dict[str, float]) -> None:
        row = {"epoch": epoch + 1, "stage": "head", "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
               "val_loss": float(logs["val_loss"]), "val_accuracy": float(logs["val_accuracy"])}  # fmt: skip
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)

    callbacks: list[Any] = [keras.callbacks.LambdaCallback(on_epoch_end=record)]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True))
    weights = {int(k): float(class_weight[k]) for k in np.unique(y)} if class_weight is not None else None
    if epoch_order is None:
        net.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch_size, callbacks=callbacks,
                verbose=0, class_weight=weights)  # fmt: skip
    else:  # --balance sampler: each epoch's positions drawn anew (a class-weighted draw needs no class_weight)
        net.fit(_EpochDraws(x, y, batch_size, epoch_order), validation_data=(x_val, y_val), epochs=epochs,
                callbacks=callbacks, verbose=0)  # fmt: skip
    dense = [layer for layer in net.layers if isinstance(layer, keras.layers.Dense)]
    return [layer.get_weights()[0] for layer in dense], [layer.get_weights()[1] for layer in dense], history
