"""The GPU path held on a machine without a GPU: the counting CUDA stand-in (:mod:`tlzoo_torch.standin`) runs the
real CUDA code path with every device tensor a ``meta`` tensor, and counts each call that would make the host
wait for the GPU. A steady-state step, a validation batch and a feature-extraction batch make none; a batch costs
the host one copy, into a pinned buffer of the feed's ring."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from tlzoo.backbone import get_backbone
from tlzoo.errors import TrainingDiverged
from tlzoo.images import feed as feeding
from tlzoo.images import store
from tlzoo.registry import get_registry
from tlzoo.specs import TORCHVISION_IMAGENET
from tlzoo_torch import train as torch_train
from tlzoo_torch.standin import CudaStandIn

from .datagen import write_folder

SIZE = (32, 32)


def _engine(device: str = "auto", seed: int = 0) -> torch_train.TorchEngine:
    spec = get_registry().resolve("resnet18", None)
    engine = torch_train.TorchEngine(get_backbone(spec, pretrained=False, input_size=SIZE, seed=0), 3, tap=None,
                                     dropout=0.2, seed=seed, device=device)  # fmt: skip
    engine.set_compile("off")
    engine.build()
    engine.configure(lr=0.01, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
    return engine


def _images(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *SIZE, 3), np.uint8), np.arange(n) % 3


def test_the_stand_in_counts_what_would_wait_for_a_gpu():
    with CudaStandIn() as cuda:
        host = torch.ones(4)
        pinned = torch.empty(4, pin_memory=True)
        on_device = host.to("cuda")  # pageable, blocking: counted
        pinned.to("cuda", non_blocking=True)  # pinned and non-blocking: not counted
        torch.tensor([1.0, 2.0], device="cuda")  # made from host data: counted
        assert on_device.device.type == "meta" and torch.zeros(2, device="cuda").device.type == "meta"
        float(on_device.sum())
        on_device.cpu()
        on_device.sum().item()
        torch.cuda.synchronize()
        assert cuda.blocking == {"a copy to the device from pageable memory or blocking": 1,
                                 "torch.tensor(device=)": 1, "float()": 1, "cpu()": 1, "item()": 1,
                                 "torch.cuda.synchronize()": 1}  # fmt: skip
        assert torch.cuda.is_available() and pinned.is_pinned() and not host.is_pinned()
    assert not torch.cuda.is_available()


@pytest.mark.parametrize("multilabel", [False, True], ids=["single-label", "multi-label"])
def test_a_steady_state_training_step_waits_for_nothing_and_the_epoch_reads_once(monkeypatch, multilabel):
    """Every step's blocking calls, counted between steps: none, except the non-finite check every CHECK_EVERY
    steps (one read); the epoch's end reads its sums once. The same for a multi-label set (a 0/1 matrix of
    labels, binary cross-entropy with each label's positive weight on the device)."""
    monkeypatch.setattr(torch_train, "CHECK_EVERY", 4)
    images, labels = _images()
    if multilabel:
        labels = (np.random.default_rng(1).random((len(labels), 3)) < 0.4).astype(np.uint8)
    with CudaStandIn() as cuda:
        engine = _engine()
        if multilabel:
            engine.set_multilabel(np.array([2.0, 1.0, 3.0]))
        assert engine.device == "cuda"
        for epoch in range(2):
            per_step: list[int] = []
            cuda.reset()
            last = [0]

            def step_done(n: int) -> None:
                per_step.append(cuda.total - last[0])
                last[0] = cuda.total

            engine.train_epoch(images, labels, batch_size=4, augment=["crop", "flip"], epoch=epoch, workers=2,
                               progress=step_done)  # fmt: skip
            assert len(per_step) == 12
            assert per_step == [1 if (i + 1) % 4 == 0 else 0 for i in range(12)], cuda.where
            assert cuda.total - last[0] == 1, "the epoch's one read of its loss, accuracy and count"


def test_validation_reads_the_device_once_whatever_the_number_of_batches():
    images, _ = _images(40)
    with CudaStandIn() as cuda:
        engine = _engine()
        for batch in (4, 8):
            cuda.reset()
            logits = engine.logits(images, batch_size=batch)
            assert logits.shape == (40, 3)
            assert cuda.blocking == {"cpu()": 1}, cuda.where


def test_validation_through_the_feed_gives_the_logits_of_one_pass(tmp_path):
    """On the CPU, the feed's batches give the model's logits of the whole set, in order."""
    images, _ = _images(20)
    engine = _engine("cpu")
    got = engine.logits(images, batch_size=6)
    assert engine.model is not None
    with torch.inference_mode():
        whole = engine.model(torch_train.normalize(torch.from_numpy(images), engine.backbone.spec.preprocessing))
    np.testing.assert_allclose(got, whole.numpy(), rtol=1e-4, atol=1e-4)


def test_feature_batches_are_queued_without_waiting():
    spec = get_registry().resolve("resnet18", None)
    with CudaStandIn() as cuda:
        backbone = get_backbone(spec, pretrained=False, input_size=SIZE, seed=0)
        model = backbone.inference_model(None, "cuda")
        batch = torch_train.pinned((8, *SIZE, 3), np.uint8)
        cuda.reset()
        pending = [backbone.run_images(model, batch) for _ in range(3)]
        assert cuda.total == 0, cuda.where
        assert all(p.ready() for p in pending) and np.asarray(pending[0]).shape == (8, 512)
        assert cuda.total == 0, "a copy that is done is read without waiting"


@pytest.mark.parametrize("strategy", ["fine-tune", "feature-extract"])
def test_a_whole_run_takes_the_cuda_path_on_the_stand_in(tmp_path, monkeypatch, strategy):
    """The real CLI's training under the stand-in: the run says it trained on the stand-in's GPU, with the
    default batch chosen by AutoBatch (a GPU's), and the feature batches were stacked into pinned memory."""
    from tlzoo.training.config import TrainConfig
    from tlzoo.training.run import train

    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "d", per_class=6)
    stacked: list[bool] = []
    real = torch_train.pinned
    monkeypatch.setattr(torch_train, "pinned", lambda shape, dtype: stacked.append(True) or real(shape, dtype))
    with CudaStandIn() as cuda:
        result = train(TrainConfig(data=str(data), backbone="torch/resnet18", weights="none", image_size=32, epochs=1,
                                   strategy=strategy, out_dir=str(tmp_path / "runs"), name=strategy))  # fmt: skip
        assert cuda.pinned_bytes == 0, "no batch pinned by a copy: gathered or stacked into pinned memory"
    import json

    assert json.loads((result.run_dir / "environment.json").read_text())["device"] == "cuda"
    assert stacked, "pinned memory was allocated for the batches"
    if strategy == "fine-tune":  # no --batch-size on a GPU: AutoBatch's, said and recorded
        auto = json.loads((result.run_dir / "metrics.json").read_text())["batch_size_auto"]
        assert auto["batch_size"] != 32


def test_every_batch_is_one_copy_into_a_reused_pinned_buffer(tmp_path, monkeypatch):
    """Gathered from the store straight into the ring's pinned buffers: no temporary the size of a batch is
    ever allocated (tracemalloc sees numpy's allocations), no batch is pinned by a copy, and the same
    ``threads + 2`` buffers serve every epoch."""
    BIG = (64, 64)  # noqa: N806 - a batch of 8 is 96 KiB, well above the few KiB of bookkeeping a batch allocates
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(store, "SEGMENT_BYTES", 20 * BIG[0] * BIG[1] * 3)  # 3 segments: runs from each
    from PIL import Image

    rng = np.random.default_rng(1)
    files = []
    for i in range(48):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (*BIG, 3), np.uint8)).save(path)
        files.append(str(path))
    stored = store.images(tmp_path / "cache", files, BIG, TORCHVISION_IMAGENET).images
    assert len({p for p in stored._paths}) == 3
    whole = stored[np.arange(48)]
    labels = np.arange(48) % 3
    buffers: set[int] = set()
    real_gather = feeding.Prefetcher._gather_ring

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        got = real_gather(self, *args, **kwargs)
        buffers.add(got.x.__array_interface__["data"][0])
        return got

    monkeypatch.setattr(feeding.Prefetcher, "_gather_ring", spy)
    with CudaStandIn() as cuda:
        feed = torch_train.Feed(torch.device("cuda"), threads=2)
        for epoch in range(4):
            order = np.random.default_rng(epoch).permutation(48)
            tracemalloc.start()
            batches = list(feed.prefetcher.batches(stored, labels, order, 8, draw=None))
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            if epoch > 0:  # the first epoch maps the store's files and makes the ring
                assert peak < 8 * BIG[0] * BIG[1] * 3 // 2, f"a batch-sized temporary: {peak} bytes"
            del batches
        assert len(buffers) == feed.prefetcher.ring_size == 4
        assert cuda.pinned_bytes == 0
        ring = feed.prefetcher._ring
        assert all(cuda.is_pinned(torch.from_numpy(slot.x)) for slot in ring)
        # and the batches hold the right images, each with its label
        feed2 = torch_train.Feed(torch.device("cuda"), threads=1)
        order = np.random.default_rng(9).permutation(48)
        for k, batch in enumerate(feed2.prefetcher.batches(stored, labels, order, 8)):
            rows = order[8 * k : 8 * k + 8]
            assert batch.order is not None  # gathered in the store's file order, a take per segment
            np.testing.assert_array_equal(batch.x[batch.order], whole[rows])
            np.testing.assert_array_equal(batch.y, labels[rows])
            feed2.prefetcher.release(batch, None)
        feed.close()
        feed2.close()


def test_a_buffer_is_gathered_into_again_only_after_its_copy_is_done():
    waited: list[int] = []
    prefetcher = feeding.Prefetcher(1, allocate=lambda shape, dtype: np.zeros(shape, dtype))
    images = np.arange(12 * 2 * 2 * 3, dtype=np.uint8).reshape(12, 2, 2, 3)
    for batch in prefetcher.batches(images, np.zeros(12, np.int64), np.arange(12), 2):
        prefetcher.release(batch, lambda step=batch.step: waited.append(step))
    # ring of 3: batch k's buffer is next used by batch k + 3, whose gather waits for k's copy first
    assert waited == [0, 1, 2]
    prefetcher.close()


def test_the_augmentation_draws_do_not_depend_on_the_feed_threads():
    """Each batch's crops and flips are drawn on a feed thread from (seed, epoch, rank, step): one thread or
    three, the epoch trains to the same weights (so a resumed run repeats the uninterrupted one)."""
    images, labels = _images(36)
    digests = []
    for workers in (1, 3):
        engine = _engine("cpu", seed=4)
        engine.train_epoch(images, labels, batch_size=6, augment=["crop", "flip"], epoch=1, workers=workers,
                           progress=None)  # fmt: skip
        digests.append(engine.model_digest())
    assert digests[0] == digests[1]


def _diverge_on_one_rank(rank: int, init: str, out: str) -> None:
    import types

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        fake = types.SimpleNamespace(distributed=True, _device=torch.device("cpu"))
        finite = torch.tensor(3.0, dtype=torch.float64)
        total = torch.tensor(float("nan") if rank == 1 else 3.0, dtype=torch.float64)
        torch_train.TorchEngine._check_finite(fake, finite * 0 + 3.0, 10)  # both finite: no error, one collective
        try:
            torch_train.TorchEngine._check_finite(fake, total, 10)
        except TrainingDiverged as exc:
            Path(out, f"rank{rank}").write_text(str(exc))
    finally:
        torch.distributed.destroy_process_group()


def test_under_ddp_every_rank_stops_at_the_same_check_with_the_same_line(tmp_path):
    """Only rank 1's loss is non-finite: both ranks stop at that check with one and the same error (before,
    rank 0 went on into the epoch's all_reduce and waited there until torchrun killed it)."""
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_diverge_on_one_rank, args=(init, str(tmp_path)), nprocs=2, start_method="spawn",
                       join=True)  # fmt: skip
    said = [(tmp_path / f"rank{r}").read_text() for r in (0, 1)]
    assert said[0] == said[1] and "training diverged" in said[0]


def test_a_waiting_run_is_woken_by_the_fillers_progress_only(tmp_path):
    import threading
    import time

    bucket, log = tmp_path / "bucket", tmp_path / "names.log"
    bucket.mkdir()
    started = time.monotonic()
    assert store._published_within(bucket, log, 0.2) is False  # nothing published: two stat calls a look
    assert time.monotonic() - started >= 0.2

    def publish() -> None:
        time.sleep(0.05)
        (bucket / "seg-1.u8").write_bytes(b"x")

    threading.Thread(target=publish).start()
    started = time.monotonic()
    assert store._published_within(bucket, log, 5.0) is True
    assert time.monotonic() - started < 1.0, "woken when the segment appeared, not at the end of the wait"
    os.remove(bucket / "seg-1.u8")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_keras_on_a_gpu_trains_in_mixed_precision_and_saves_float32(tmp_path, monkeypatch, policy):
    """A GPU's policy (bf16 where the GPU has it, else fp16 with loss scaling), forced here on the CPU: the layers
    compute in it, the loss is float32 and the steps train; the saved model (what is exported) is float32."""
    from tlzoo_keras import train as keras_train

    monkeypatch.setattr(keras_train, "mixed_policy", lambda: policy)
    monkeypatch.setattr(keras_train.KerasEngine, "device", property(lambda self: "gpu"))
    spec = get_registry().resolve("mobilenet_v2", "keras")
    engine = keras_train.KerasEngine(get_backbone(spec, pretrained=False, input_size=SIZE, seed=0), 2, tap=None,
                                     dropout=0.0, seed=0, device="cpu")  # fmt: skip
    engine.set_compile("off")
    engine.build()
    engine.configure(lr=1e-2, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
    assert engine.model is not None
    assert {layer.dtype_policy.name for layer in engine.model.layers[1:]} == {policy}
    assert all(v.dtype == "float32" for v in engine.model.weights)  # the variables stay float32
    head = engine.model.get_layer("head_dense_0")
    before = head.kernel.numpy().copy()
    images, labels = _images(96)
    loss, accuracy = engine.train_epoch(images, labels % 2, batch_size=4, augment=[], epoch=0, workers=1,
                                        progress=None)  # fmt: skip
    assert np.isfinite(loss) and not np.array_equal(before, head.kernel.numpy())
    if policy == "mixed_float16":  # overflowing steps were skipped and the scale halved until they fit
        assert float(engine.loss_scale) < keras_train.LOSS_SCALE_START
        assert "loss scaling" in engine.precision()
    assert engine.logits(images[:3]).dtype == np.float32
    engine.save_model(tmp_path)
    saved = keras_train.load_classifier(tmp_path)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    np.testing.assert_allclose(np.asarray(saved(np.zeros((1, *SIZE, 3), np.float32))),
                               np.asarray(engine.model(np.zeros((1, *SIZE, 3), np.float32)), np.float32),
                               atol=0.05)  # the same weights; bf16's 8 bits of mantissa apart  # fmt: skip
