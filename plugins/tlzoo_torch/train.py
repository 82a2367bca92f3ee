"""Training a torch classifier: mixed precision and channels_last on CUDA, a feed that keeps the device busy
(batches gathered ahead on threads, augmented on the device, loss and accuracy summed there and read once an
epoch), and nothing that assumes a single process (DistributedSampler/DDP when torch.distributed is up)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlzoo.allocator import tune as _tune_allocator

_tune_allocator()  # before torch allocates its first buffers (see tlzoo.allocator)
import torch  # noqa: E402
from torch import nn

from tlzoo.files import atomic_write
from tlzoo.heads import HeadParams
from tlzoo.images import augment as augmentation
from tlzoo.images.feed import Prefetcher
from tlzoo.specs import Preprocessing
from tlzoo.training import compile_payoff as payoff
from tlzoo.training.engine import CHECK_EVERY, Engine, ProgressFn, check_finite

from .backend import normalized

MODEL_FILE = "model.pt"


def pick_device(request: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a device asked for by name must exist."""
    from tlzoo.errors import UsageError

    text = request.strip().lower()
    if text != "auto":
        if text.isdigit():
            text = f"cuda:{text}"
        try:
            device = torch.device("cuda" if text == "gpu" else text)
        except RuntimeError:
            raise UsageError(f"--device {request!r} is not a device: use auto, cpu, cuda, cuda:N, N or mps") from None
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise UsageError(f"--device {request}: torch sees no CUDA GPU on this machine; use --device cpu (or auto)")
            if device.index is not None and device.index >= count:
                raise UsageError(f"--device {request}: torch sees {count} CUDA GPU(s), numbered 0..{count - 1}")
        elif device.type == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise UsageError(f"--device {request}: Apple's MPS is not available here; use --device cpu (or auto)")
        elif device.type != "cpu":
            raise UsageError(f"--device {request!r}: tlzoo trains on cpu, cuda or mps")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_head(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        if i > 0:
            layers.append(nn.ReLU())
        layers += [nn.Dropout(dropout), nn.Linear(sizes[i], sizes[i + 1])]
    return nn.Sequential(*layers)


def head_from_params(params: HeadParams) -> nn.Sequential:
    head = make_head(params.sizes, params.dropout)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, w, b in zip(linears, params.weights, params.biases):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            layer.bias.copy_(torch.from_numpy(b))
    return head


class TorchClassifier(nn.Module):
    """Backbone features followed by the head; outputs logits."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def normalize(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """RGB uint8 NHWC -> float NCHW, :func:`tlzoo.images.normalize.normalize`'s values (to float32 rounding)."""
    return normalized(x.permute(0, 3, 1, 2), prep)


def augment_batch(x: torch.Tensor, theta: np.ndarray | torch.Tensor | None) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W, float) resampled through its own affine matrix (see
    :mod:`tlzoo.images.augment`): one ``affine_grid`` + ``grid_sample`` for the batch, on ``x``'s device.
    ``theta`` is on that device already when the feed copied it there with the batch."""
    if theta is None:
        return x
    given = torch.from_numpy(theta) if isinstance(theta, np.ndarray) else theta
    matrices = given.to(x.device, dtype=torch.float32, non_blocking=True)
    grid = nn.functional.affine_grid(matrices, list(x.shape), align_corners=False)
    out = nn.functional.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)


def pinned(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Page-locked host memory as a numpy array (the feed's ring buffers on CUDA): the device copies from it
    without waiting for the host, and the array keeps its tensor alive."""
    return torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True).numpy()


class Feed:
    """Batches from :class:`tlzoo.images.feed.Prefetcher`, on the device.

    On CUDA every batch is gathered straight into a pinned buffer of the feed's ring (its one host copy) and
    copied to the device on a stream of its own, so the copy overlaps the step before it; the step's stream
    waits for the copy by an event, not the host, and the buffer is gathered into again only once its copy has
    finished. Elsewhere a batch is gathered into memory of its own and used where it lies."""

    def __init__(self, device: torch.device, threads: int) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.prefetcher: Prefetcher[Any] = Prefetcher(threads, allocate=pinned if self.cuda else None)
        self.copies = torch.cuda.Stream(device) if self.cuda else None

    @property
    def threads(self) -> int:
        return self.prefetcher.threads

    def batches(self, images: Any, labels: np.ndarray, order: np.ndarray, batch_size: int,
                draw: Callable[[int, int], np.ndarray | None] | None = None,
                ) -> Generator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | np.ndarray | None], None, None]:  # fmt: skip
        """``(x, y, theta)`` per batch: uint8 NHWC images, int64 labels and the augmentation matrices
        (``draw(step, n)``, drawn on the feed's threads; None without ``draw``)."""
        if not self.cuda:
            for step, (x, y) in enumerate(self.prefetcher.batches(images, labels, order, batch_size)):
                yield torch.from_numpy(x), torch.from_numpy(y), draw(step, len(y)) if draw is not None else None
            return
        assert self.copies is not None
        for batch in self.prefetcher.batches(images, labels, order, batch_size, draw):
            with torch.cuda.stream(self.copies):
                x = torch.from_numpy(batch.x).to(self.device, non_blocking=True)
                y = torch.from_numpy(batch.y).to(self.device, non_blocking=True)
                theta = None if batch.theta is None else torch.from_numpy(batch.theta).to(self.device, non_blocking=True)
                unsort = None if batch.order is None else torch.from_numpy(batch.order).to(self.device, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(self.copies)
            computing = torch.cuda.current_stream(self.device)
            computing.wait_event(copied)  # the step waits for its batch on the device, the host does not
            for tensor in (x, y, theta, unsort):
                if tensor is not None:
                    tensor.record_stream(computing)  # made on the copy stream, freed after the step's use
            self.prefetcher.release(batch, copied.synchronize)
            if unsort is not None:  # gathered in the store's file order: the epoch's, on the device
                x = x.index_select(0, unsort)
            yield x, y, theta

    def close(self) -> None:
        self.prefetcher.close()


COMPILE_BACKEND = "inductor"  # torch.compile's default; tests that only check the wiring use "eager"


class TorchEngine(Engine):
    state_suffix = ".pt"
    can_compile = True
    decides_by_payoff = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from tlzoo.distributed import world

        devices = [d.strip() for d in self.device_request.split(",")]
        # --device 0,1 under torchrun: each local rank takes its own GPU from the list.
        self._device = pick_device(devices[world().local_rank % len(devices)])
        self.world_size = 1
        self._ddp: nn.Module | None = None
        self._compiled: nn.Module | None = None  # torch.compile of the training model, made at its first step
        self._compiled_ran = False
        self._indices: list[int] = []
        self._feed: Feed | None = None
        self._steps_run = 0  # training steps so far, every stage and epoch (for --compile auto's probe)
        self._probe_from: float | None = None  # the clock when the probe's timed steps began (they may cross epochs)
        self._eager_step_s = 0.0
        self._class_weights: torch.Tensor | None = None  # --balance weights, on the device
        self._pos_weight: torch.Tensor | None = None  # multi-label --balance weights, on the device
        if self._device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # autotuned convolutions: --seed repeats within a tolerance
        torch.manual_seed(self.seed)
        self.model: TorchClassifier | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.base_lrs: list[float] = []
        self.amp_dtype = torch.bfloat16 if self._device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._device.type == "cuda" and self.amp_dtype == torch.float16)

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def distributed(self) -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    def build(self, head: HeadParams | None = None) -> None:
        features = self.backbone.feature_model(self.tap)
        dim = self.backbone.spec.feature_dim
        if self.tap is not None:
            with torch.no_grad():
                dim = int(features.eval()(torch.zeros(1, 3, *self.backbone.input_size)).shape[1])
        if head is not None:
            self.output = head.output
            head_module = head_from_params(head)
        else:
            head_module = make_head([dim, self.n_classes], self.dropout)
        self.model = TorchClassifier(features, head_module).to(self._device)
        if self._device.type == "cuda" or self.distributed:
            # Weights in the layout their gradients arrive in (channels_last inputs): DDP's gradient buckets
            # follow the weights' strides, so they match without copies or warnings.
            self.model = self.model.to(memory_format=torch.channels_last)

    def _parallel(self) -> nn.Module:
        assert self.model is not None
        if not self.distributed:
            return self.model
        if self._ddp is None:  # built once per stage: DDP fixes the set of trainable parameters when made
            ids = [self._device.index] if self._device.type == "cuda" else None
            # Gradients as views of DDP's buckets: no copy, and no stride mismatch with channels_last weights.
            self._ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, gradient_as_bucket_view=True)
        return self._ddp

    def start_distributed(self, world: Any) -> None:
        import datetime

        dist = torch.distributed
        backend = "nccl" if self._device.type == "cuda" else "gloo"
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.job_info = {"world_size": self.world_size, "backend": dist.get_backend(), "device": str(self._device)}

    def broadcast(self, value: Any) -> Any:
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def last_epoch_indices(self) -> list[int]:
        return list(self._indices)

    def model_digest(self) -> str:
        import hashlib

        assert self.model is not None
        h = hashlib.sha256()
        for key, value in sorted(self.model.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def configure(self, *, lr: float, backbone_lr_mult: float, optimizer: str, momentum: float, nesterov: bool,
                  weight_decay: float) -> None:  # fmt: skip
        assert self.model is not None
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        body = [p for p in self.model.features.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": lr}]
        if body and backbone_lr_mult > 0:
            groups.append({"params": body, "lr": lr * backbone_lr_mult})
        elif body:
            for p in body:
                p.requires_grad_(False)
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        elif optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self._ddp = None  # the trainable parameters may have changed (two-stage): wrap again
        self._compiled, self._compiled_ran = None, False

    def set_lr_factor(self, factor: float) -> None:
        assert self.optimizer is not None
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def free_memory(self) -> int | None:
        if self._device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(self._device)
        return int(free + torch.cuda.memory_reserved(self._device) - torch.cuda.memory_allocated(self._device))

    def step_memory(self, batch_size: int) -> int:
        """The peak CUDA memory of a forward and backward pass on a random batch (as :meth:`_step` runs them,
        eagerly), over what was allocated before; the batch norms' running statistics and the generators are
        restored and the gradients dropped afterwards."""
        assert self.model is not None
        device = self._device
        h, w = self.backbone.input_size
        saved = [(b, b.detach().clone()) for b in self.model.buffers()]
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        try:
            with torch.random.fork_rng(devices=[device]):
                x = torch.randn(batch_size, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
                y = torch.zeros(batch_size, dtype=torch.long, device=device)
                self.model.train()
                with torch.autocast(device.type, dtype=self.amp_dtype):
                    loss = nn.functional.cross_entropy(self.model(x).float(), y)
                loss.backward()
                torch.cuda.synchronize(device)
            return int(torch.cuda.max_memory_allocated(device) - before)
        except torch.cuda.OutOfMemoryError as exc:
            raise MemoryError(str(exc)) from None
        finally:
            self.model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)
            x = y = loss = None  # noqa: F841 - the probe's tensors go before the cache is emptied
            torch.cuda.empty_cache()

    def _to_input(self, batch: torch.Tensor) -> torch.Tensor:
        # Batches arrive NHWC, so the NCHW view is already channels_last in memory: oneDNN's CPU
        # convolutions train about 25 % faster on it than on contiguous NCHW, cuDNN's too (no copy here).
        x = normalize(batch.to(self._device, non_blocking=True), self.backbone.spec.preprocessing)
        return x.contiguous(memory_format=torch.channels_last)

    def train_epoch(self, images: np.ndarray, labels: np.ndarray, *, batch_size: int, augment: list[str],
                    epoch: int, workers: int, progress: ProgressFn | None) -> tuple[float, float]:  # fmt: skip
        assert self.model is not None and self.optimizer is not None
        # Dropout draws from the global generators and augmentation from a generator of (seed, epoch, rank):
        # a resumed run continues exactly as the uninterrupted one would have.
        self.seed_epoch(epoch)
        torch.manual_seed(self.epoch_seed(epoch))
        n = len(labels)
        sampler: Any
        if self.distributed:
            # Each rank a disjoint shard (padded by repeating a few images so every rank takes the same number
            # of steps, as DDP needs); the shuffle depends on the run's seed and the epoch.
            sampler = torch.utils.data.DistributedSampler(range(n), seed=self.seed, shuffle=True, drop_last=False)
            sampler.set_epoch(epoch)
            torch.manual_seed(self.epoch_seed(epoch) + self.rank)  # different dropout on each shard
        else:
            sampler = torch.utils.data.RandomSampler(range(n), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        # a store larger than memory is read a block at a time; --balance sampler draws the order class-balanced
        order = self.epoch_positions(images, np.asarray(labels), list(sampler), epoch)
        self._indices = order.tolist()
        if len(order) > batch_size and len(order) % batch_size == 1:
            order = order[:-1]  # a batch of one breaks BatchNorm
        size, rank = self.backbone.input_size, self.rank

        def draw(step: int, n: int) -> np.ndarray | None:  # on a feed thread, by the batch's place in the epoch
            return augmentation.affine(n, size, augment, augmentation.generator(self.seed, epoch, rank, step))

        feed = self._feed_for(workers)
        model = self._training_model()
        model.train()
        # Summed on the device and read once an epoch (reading a loss every step waits for the device every step);
        # a non-finite loss is looked for every CHECK_EVERY steps and at the end.
        total = torch.zeros((), dtype=torch.float64, device=self._device)
        correct = torch.zeros((), dtype=torch.int64, device=self._device)
        seen = 0
        batches = feed.batches(images, labels, order, batch_size, draw)
        with contextlib.closing(batches):  # an error or Ctrl-C: nothing more is gathered
            for step, (batch, y, theta) in enumerate(batches):
                if self._compiled is not None and len(y) < batch_size:
                    # The compiled step keeps one shape: the epoch's last, partial batch is left out (its images
                    # come in other epochs' orders), as a DataLoader with drop_last does.
                    if progress is not None:
                        progress(len(y))
                    break
                x = augment_batch(self._to_input(batch), theta)
                if self.probes_compile and self._steps_run == payoff.WARM_STEPS:
                    self._probe_from = self._clock()
                elif self.probes_compile and self._steps_run == payoff.PROBE_STEPS and self._probe_from is not None:
                    per_step = (self._clock() - self._probe_from) / (payoff.PROBE_STEPS - payoff.WARM_STEPS)
                    self._eager_step_s = per_step
                    if self.decide_compile(per_step, self._steps_run, batch_size):
                        model = self._training_model()
                        model.train()
                if self._compiled is not None and not self._compiled_ran:  # compiling happens here, at its first batch
                    self.say("compiling the training step (torch.compile, inductor): a minute or more the first time")
                    started = self._clock()
                    try:
                        loss, out = self._step(model, x, y)
                    except Exception as exc:  # noqa: BLE001 - inductor's failures have no common type
                        self.compile_failed(exc)  # raises under --compile on
                        self._compiled = None
                        model = self._training_model()
                        model.train()
                        loss, out = self._step(model, x, y)
                    else:
                        self._record_compile(self._clock() - started, batch_size)
                    self._compiled_ran = True
                else:
                    loss, out = self._step(model, x, y)
                total.add_(loss.detach(), alpha=len(y))  # one launch each: the step's bookkeeping stays small
                # multi-label: the (image, label) pairs right at 0.5, divided by the labels at the end
                correct.add_(((out.detach() >= 0) == (y > 0)).sum() if self.multilabel else (out.detach().argmax(1) == y).sum())
                seen += len(y)
                self._steps_run += 1
                if (step + 1) % CHECK_EVERY == 0:
                    self._check_finite(total, seen)
                if progress is not None:
                    progress(len(y))
        self.feed_seconds = feed.prefetcher.waited
        # The epoch's one read: its loss, accuracy and count (under DDP every rank's, the whole training set's),
        # checked for a non-finite loss on every rank alike.
        sums = torch.stack([total, correct.double(), torch.full((), float(seen), dtype=torch.float64, device=self._device)])
        if self.distributed:
            torch.distributed.all_reduce(sums)
        loss_sum, right, count = (float(v) for v in sums.cpu())
        check_finite(loss_sum, int(count))
        pairs = np.shape(labels)[1] if self.multilabel else 1
        return loss_sum / max(count, 1.0), right / max(count, 1.0) / pairs

    def _feed_for(self, workers: int) -> Feed:
        """The engine's feed (made once; again when ``workers`` changes or an error closed it). ``workers`` 0:
        on CUDA one gather thread per core this process may use (the GPU eats batches faster than one thread
        copies them), elsewhere one (the CPU's cores are the step's)."""
        from tlzoo.images.decode import available_cores

        threads = workers or (available_cores() if self._device.type == "cuda" else 1)
        if self._feed is None or self._feed.threads != threads or self._feed.prefetcher.closed:
            if self._feed is not None:
                self._feed.close()
            self._feed = Feed(self._device, threads)
        return self._feed

    def _check_finite(self, total: torch.Tensor, seen: int) -> None:
        """:func:`check_finite` on this rank's sum, or under DDP on every rank's together: each rank reads the
        same value at the same step, so all stop there with the same error (none is left waiting in a
        collective for a rank that stopped)."""
        if not self.distributed:
            check_finite(total, seen)
            return
        both = torch.stack([total, torch.full((), float(seen), dtype=torch.float64, device=self._device)])
        torch.distributed.all_reduce(both)
        check_finite(both[0], int(both[1]))

    def _training_model(self) -> nn.Module:
        """The model the training steps call: DDP-wrapped under torchrun, compiled where :attr:`compiles`."""
        model = self._parallel()
        if not self.compiles:
            return model
        if self._compiled is None:
            from tlzoo.training.cache import cache_root

            payoff.use_cache_for_inductor(cache_root().parent)
            self._compiled = torch.compile(model, backend=COMPILE_BACKEND)
        return self._compiled

    def _clock(self) -> float:
        """Seconds, once the device has finished what was queued (a step's time, not its launch's)."""
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter()

    def _record_compile(self, first_step_s: float, batch_size: int) -> None:
        """The first compiled step's time, less an eager step's where the probe timed one, as this model's compile
        time here; nothing when that is not a time a compile took (no longer than an eager step)."""
        from tlzoo.training.cache import cache_root

        compile_s = first_step_s - self._eager_step_s
        if compile_s > 0:
            payoff.remember(cache_root().parent, self.compile_key(batch_size), compile_s)

    can_scale_logits = True
    can_balance = True

    def set_balance(self, mode: str, class_weights: np.ndarray | None) -> None:
        super().set_balance(mode, class_weights)
        # on the device once: a tensor made from host data each step would be a blocking copy
        self._class_weights = None if class_weights is None else \
            torch.as_tensor(class_weights, dtype=torch.float32).to(self._device)  # fmt: skip

    can_multilabel = True

    def set_multilabel(self, pos_weight: np.ndarray | None) -> None:
        super().set_multilabel(pos_weight)
        self._pos_weight = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32).to(self._device)

    def scale_logits(self, factor: float | np.ndarray, shift: float | np.ndarray = 0.0) -> None:
        assert self.model is not None
        last = [m for m in self.model.head if isinstance(m, nn.Linear)][-1]
        scale = torch.as_tensor(np.broadcast_to(np.asarray(factor, np.float64), last.bias.shape).copy(), dtype=last.bias.dtype)
        offset = torch.as_tensor(np.broadcast_to(np.asarray(shift, np.float64), last.bias.shape).copy(), dtype=last.bias.dtype)
        with torch.no_grad():
            last.weight.mul_(scale.to(last.weight.device)[:, None])
            last.bias.mul_(scale.to(last.bias.device)).add_(offset.to(last.bias.device))

    def precision(self) -> str:
        if self._device.type != "cuda":
            return "float32"
        return "bfloat16 autocast" if self.amp_dtype == torch.bfloat16 else "float16 autocast, loss scaling"

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self._device) if self._device.type == "cuda" else str(self._device)

    def framework_version(self) -> str:
        return f"torch {torch.__version__}"

    def _step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch; returns its mean loss and the logits, on the device (not read here)."""
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self._device.type, dtype=self.amp_dtype, enabled=self._device.type == "cuda"):
            out = model(x)
            if self.multilabel:
                loss = nn.functional.binary_cross_entropy_with_logits(out.float(), y.float(), pos_weight=self._pos_weight)
            else:
                loss = nn.functional.cross_entropy(out.float(), y, weight=self._class_weights)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, out

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Through the training feed, in order: the images are gathered a batch at a time (a store's validation
        split is never in memory whole) and the logits stay on the device until the one read at the end."""
        assert self.model is not None
        self.model.eval()
        n = len(images)
        out: torch.Tensor | None = None
        feed = self._feed_for(self._feed.threads if self._feed is not None else 0)
        batches = feed.batches(images, np.zeros(n, np.int64), np.arange(n, dtype=np.int64), batch_size)
        with torch.inference_mode(), contextlib.closing(batches):
            start = 0
            for batch, _, _ in batches:
                x = self._to_input(batch)
                with torch.autocast(self._device.type, dtype=self.amp_dtype, enabled=self._device.type == "cuda"):
                    logits = self.model(x).float()
                if out is None:
                    out = torch.empty((n, logits.shape[1]), dtype=torch.float32, device=self._device)
                out[start : start + len(logits)] = logits
                start += len(logits)
        return np.zeros((0, 0), np.float32) if out is None else out.cpu().numpy()

    def save_model(self, run_dir: Path) -> Path:
        assert self.model is not None
        path = Path(run_dir) / MODEL_FILE
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        return path

    def save_state(self, path: Path, extra: dict[str, Any]) -> None:
        assert self.model is not None and self.optimizer is not None
        state = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "extra": extra,
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load_state(self, path: Path) -> dict[str, Any]:
        assert self.model is not None and self.optimizer is not None
        state = torch.load(path, map_location=self._device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return dict(state["extra"])

    def peek_state(self, path: Path) -> dict[str, Any]:
        return dict(torch.load(path, map_location="cpu", weights_only=True)["extra"])

    def trainable_params(self) -> int:
        assert self.model is not None
        return int(sum(p.numel() for p in self.model.parameters() if p.requires_grad))

    def head_meta(self) -> dict[str, Any]:
        assert self.model is not None
        linears = [m for m in self.model.head if isinstance(m, nn.Linear)]
        sizes = [linears[0].in_features, *(m.out_features for m in linears)]
        dropout = next((m.p for m in self.model.head if isinstance(m, nn.Dropout)), 0.0)
        return {"sizes": sizes, "dropout": dropout}

    def load_model_weights(self, run_dir: Path) -> None:
        assert self.model is not None
        self.model.load_state_dict(torch.load(Path(run_dir) / MODEL_FILE, map_location=self._device, weights_only=True))


def load_classifier(run_dir: Path, meta: Any) -> TorchClassifier:
    """Rebuild a trained classifier from its run directory (no pickle: weights_only).
    ``meta`` is the run's :class:`tlzoo.runs.runfiles.ClassifierMeta`."""
    from tlzoo.backbone import get_backbone

    backbone = get_backbone(meta.backbone, pretrained=False, input_size=meta.input_size)
    features = backbone.feature_model(meta.tap)
    model = TorchClassifier(features, make_head(meta.head["sizes"], meta.head["dropout"]))
    state = torch.load(Path(run_dir) / meta.model_file, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def train_mlp(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, sizes: list[int], *,
              dropout: float, epochs: int, lr: float, weight_decay: float, patience: int, batch_size: int,
              seed: int, on_epoch: Callable[[dict[str, Any]], None] | None,
              class_weight: np.ndarray | None = None, multilabel: bool = False, pos_weight: np.ndarray | None = None,
              epoch_order: Callable[[int], np.ndarray] | None = None) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:  # fmt: skip
    """Dense layers on standardized features (see :meth:`tlzoo.adapters.FrameworkAdapter.train_mlp`);
    ``class_weight`` weighs the training loss (the validation loss, which early stopping reads, is not).
    ``multilabel``: ``y`` is a 0/1 matrix and the loss binary cross-entropy, ``pos_weight`` each label's positives'.
    ``epoch_order(epoch)`` (``--balance sampler``): the positions each epoch trains on, instead of a shuffle."""
    torch.manual_seed(seed)
    net = make_head(sizes, dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    if multilabel:
        y, y_val = y.astype(np.float32), y_val.astype(np.float32)
    xt, yt, xvt, yvt = (torch.from_numpy(a) for a in (x, y, x_val, y_val))
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    if multilabel:
        train_loss: nn.Module = nn.BCEWithLogitsLoss(pos_weight=torch.as_tensor(pos_weight, dtype=torch.float32)) \
            if pos_weight is not None else loss_fn  # fmt: skip
    else:
        train_loss = nn.CrossEntropyLoss(weight=torch.as_tensor(class_weight, dtype=torch.float32)) \
            if class_weight is not None else loss_fn  # fmt: skip

    def right(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # images, or multi-label (image, label) pairs
        return ((out >= 0) == (target > 0.5)).float().mean(1) if multilabel else (out.argmax(1) == target).float()
    generator = torch.Generator().manual_seed(seed)
    best, best_state, waited, history = float("inf"), None, 0, []
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(xt), generator=generator) if epoch_order is None else \
            torch.as_tensor(np.asarray(epoch_order(epoch - 1), np.int64))  # fmt: skip
        total, correct = 0.0, 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            out = net(xt[idx])
            loss = train_loss(out, yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += float(right(out, yt[idx]).sum())
        net.eval()
        with torch.no_grad():
            out = net(xvt)
            val_loss = float(loss_fn(out, yvt))
            val_acc = float(right(out, yvt).mean())
        row = {"epoch": epoch, "stage": "head", "loss": total / len(xt), "accuracy": correct / len(xt),
               "val_loss": val_loss, "val_accuracy": val_acc}  # fmt: skip
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if val_loss < best - 1e-6:
            best, waited = val_loss, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if patience and waited >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    return [m.weight.detach().numpy().T for m in linears], [m.bias.detach().numpy() for m in linears], history
