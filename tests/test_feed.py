"""The training feed: batches gathered ahead on the feed's threads (torch and Keras), per-image augmentation on the
device drawn reproducibly (torch), and the epoch's sums read once with non-finite losses still caught (both)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlzoo.errors import TrainingDiverged
from tlzoo.images import augment
from tlzoo_torch.train import Feed, augment_batch


def test_each_image_of_a_batch_gets_its_own_crop_and_flip():
    theta = augment.affine(64, (224, 224), ["crop", "flip"], augment.generator(0, 1))
    assert theta.shape == (64, 2, 3) and theta.dtype == np.float32
    assert len({tuple(t.ravel().round(5)) for t in theta}) == 64  # one draw per image, not one per batch
    flips = (theta[:, 0, 0] < 0).mean()
    assert 0.25 < flips < 0.75
    scales = np.abs(theta[:, 0, 0] * theta[:, 1, 1])  # the crop's area fraction
    assert scales.min() >= 0.6 - 0.07 and scales.max() <= 1.0
    # The boxes stay inside the image: centre +- half-size within -1..1.
    for axis, col in ((0, 2), (1, 2)):
        half = np.abs(theta[:, axis, axis])
        assert np.all(np.abs(theta[:, axis, col]) + half <= 1 + 1e-6)
    # The same batch of identical images comes out different image by image.
    x = torch.rand(1, 3, 32, 32).expand(8, 3, 32, 32).contiguous()
    out = augment_batch(x, augment.affine(8, (32, 32), ["crop", "flip"], augment.generator(0, 1)))
    assert len({out[i].sum().item() for i in range(8)}) == 8


def test_the_draws_repeat_for_the_same_seed_epoch_and_rank_only():
    def draw(seed, epoch, rank=0):
        return augment.affine(16, (40, 30), ["crop", "flip"], augment.generator(seed, epoch, rank))

    np.testing.assert_array_equal(draw(3, 2), draw(3, 2))
    for other in (draw(3, 3), draw(4, 2), draw(3, 2, rank=1)):
        assert not np.array_equal(draw(3, 2), other)
    assert augment.affine(4, (8, 8), [], augment.generator(0, 0)) is None


def test_a_flip_is_the_mirror_image_and_a_crop_is_the_box_resized():
    x = torch.rand(2, 3, 16, 12)
    flip = np.tile(np.array([[-1, 0, 0], [0, 1, 0]], np.float32), (2, 1, 1))
    torch.testing.assert_close(augment_batch(x, flip), x.flip(-1), rtol=0, atol=1e-6)
    # The box rows 0..7, columns 0..5 (half of each side) at twice the size: bilinear upsampling of that box.
    box = np.tile(np.array([[0.5, 0, -0.5], [0, 0.5, -0.5]], np.float32), (2, 1, 1))
    expected = torch.nn.functional.interpolate(x[:, :, :8, :6], scale_factor=2, mode="bilinear", align_corners=False)
    got = augment_batch(x, box)
    # Inside the box's border row and column the two agree exactly (at the border, the resample sees the
    # neighbouring pixels of the full image where interpolate repeats the box's edge).
    torch.testing.assert_close(got[:, :, 1:-2, 1:-2], expected[:, :, 1:-2, 1:-2], rtol=0, atol=1e-5)
    # torchvision's RandomResizedCrop rules: a box inside the image, of 60-100 % of its area.
    boxes = augment.crop_boxes(500, 30, 40, np.random.default_rng(0))
    top, left, h, w = boxes.T
    assert np.all(top >= 0) and np.all(left >= 0) and np.all(top + h <= 30) and np.all(left + w <= 40)
    assert np.all(h * w >= 0.6 * 1200 - 40) and np.all(h * w <= 1200)


def test_the_feed_gathers_every_row_once_in_order_from_an_array_or_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    from PIL import Image

    from tlzoo.images import store
    from tlzoo.specs import TORCHVISION_IMAGENET

    files = []
    rng = np.random.default_rng(0)
    for i in range(21):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), np.uint8)).save(path)
        files.append(str(path))
    stored = store.images(tmp_path / "cache", files, (12, 12), TORCHVISION_IMAGENET).images
    array = stored[np.arange(21)]
    labels = np.arange(21) % 3
    order = rng.permutation(21)
    feed = Feed(torch.device("cpu"), threads=2)
    for images in (array, stored):
        got = list(feed.batches(images, labels, order, 8))
        assert [len(y) for _, y, _ in got] == [8, 8, 5]
        np.testing.assert_array_equal(torch.cat([x for x, _, _ in got]).numpy(), array[order])
        np.testing.assert_array_equal(torch.cat([y for _, y, _ in got]).numpy(), labels[order])
    feed.close()


def test_a_non_finite_loss_stops_the_epoch_with_training_diverged(monkeypatch):
    from tlzoo.registry import get_registry
    from tlzoo.backbone import get_backbone
    from tlzoo_torch import train as torch_train

    spec = get_registry().resolve("resnet18", None)
    engine = torch_train.TorchEngine(get_backbone(spec, pretrained=False, input_size=(32, 32), seed=0), 2, tap=None,
                                     dropout=0.0, seed=0, device="cpu")  # fmt: skip
    engine.build()
    engine.configure(lr=1e30, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
    monkeypatch.setattr(torch_train, "CHECK_EVERY", 2)
    steps = []
    real = engine._step
    monkeypatch.setattr(engine, "_step", lambda *a: (steps.append(1), real(*a))[1])
    images = np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3), np.uint8)
    with pytest.raises(TrainingDiverged) as raised:
        engine.train_epoch(images, np.arange(64) % 2, batch_size=4, augment=[], epoch=0, workers=0, progress=None)
    assert "training diverged" in str(raised.value) and "not finite" in str(raised.value)
    assert len(steps) < 16  # found at a check, not only at the epoch's end


def test_compile_auto_decides_by_payoff():
    from tlzoo.training.compile_payoff import decide

    # No compile time recorded: compile only for runs whose eager estimate is over 10 minutes.
    assert decide(None, 300).compile is False and "pays only on runs over 10.0 min" in decide(None, 300).why
    assert decide(None, 900).compile is True and "recording how long it takes" in decide(None, 900).why
    # Recorded: compile when it costs less than the 20 % it should save.
    assert decide(50, 3000).compile is True and "compiling took 50 s here before, under the 10.0 min" in decide(50, 3000).why
    assert decide(50, 200).compile is False and "more than the 40 s it would save: eager" in decide(50, 200).why


def _engine(monkeypatch, cache, planned_steps):
    from tlzoo.backbone import get_backbone
    from tlzoo.registry import get_registry
    from tlzoo_torch import train as torch_train

    monkeypatch.setenv("TLZOO_CACHE", str(cache))
    monkeypatch.setattr(torch_train, "COMPILE_BACKEND", "eager")  # the wiring, not inductor's minutes
    monkeypatch.setattr(torch_train.TorchEngine, "on_gpu", property(lambda self: True))
    spec = get_registry().resolve("resnet18", None)
    engine = torch_train.TorchEngine(get_backbone(spec, pretrained=False, input_size=(32, 32), seed=0), 2, tap=None,
                                     dropout=0.0, seed=0, device="cpu")  # fmt: skip
    ticks = iter(range(10_000))
    engine._clock = lambda: float(next(ticks))  # every look at the clock: one more second
    said: list[str] = []
    engine.say = said.append
    engine.planned_steps = planned_steps
    engine.build()
    engine.configure(lr=1e-3, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
    return engine, said


def test_compile_auto_times_the_first_steps_then_compiles_and_records_the_compile_time(tmp_path, monkeypatch):
    import json

    images = np.random.default_rng(0).integers(0, 255, (60, 32, 32, 3), np.uint8)
    labels = np.arange(60) % 2
    # 15 timed steps took 1 s (two clock readings): 1/15 s a step; 100,000 steps: about 1.9 h eager, no record.
    engine, said = _engine(monkeypatch, tmp_path / "cache", 100_000)
    assert engine.probes_compile and not engine.compiles
    engine.train_epoch(images, labels, batch_size=2, augment=["flip"], epoch=0, workers=0, progress=None)
    assert engine.compiles and engine.compile_record()["compiled"] is True
    assert "over 10.0 min, and no compile time recorded" in engine.compile_record()["why"]
    assert any("compiling the training step" in line for line in said)
    times = json.loads((tmp_path / "cache" / "compile" / "times.json").read_text())
    assert list(times.values()) == [pytest.approx(1 - 1 / 15, abs=0.01)]  # the first compiled step less an eager one
    # The next run on this model, shape, batch and device: the record decides. 30 steps (2 s eager) do not repay
    # the 0.93 s compile; 3,000 steps do.
    short, _ = _engine(monkeypatch, tmp_path / "cache", 30)
    short.train_epoch(images, labels, batch_size=2, augment=[], epoch=0, workers=0, progress=None)
    assert not short.compiles and "compiling took 1 s here before, more than the 0 s it would save" in short.compile_record()["why"]
    long, _ = _engine(monkeypatch, tmp_path / "cache", 3_000)
    long.train_epoch(images, labels, batch_size=2, augment=[], epoch=0, workers=0, progress=None)
    assert long.compiles and "under the 40 s it should save: compiling" in long.compile_record()["why"]


class _RecordingImages:
    """An image array that records which thread gathers each batch (the store's StoreImages is read the same way)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.threads = array, array.shape, []

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        import threading

        self.threads.append(threading.current_thread().name)
        return self.array[rows]


def _keras_engine():  # type: ignore[no-untyped-def]
    from tlzoo.backbone import get_backbone
    from tlzoo.registry import get_registry
    from tlzoo_keras import train as keras_train

    spec = get_registry().resolve("vgg16", "keras")
    engine = keras_train.KerasEngine(get_backbone(spec, pretrained=False, input_size=(32, 32), seed=0), 2, tap=None,
                                     dropout=0.0, seed=0, device="cpu")  # fmt: skip
    engine.build()
    return engine


def test_keras_batches_are_gathered_on_the_feed_threads_and_train_as_from_an_array():
    images = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), np.uint8)
    labels = np.arange(40) % 2
    results = []
    for source in (images, _RecordingImages(images)):
        engine = _keras_engine()
        engine.configure(lr=1e-3, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
        results.append([engine.train_epoch(source, labels, batch_size=8, augment=["flip", "crop"], epoch=e, workers=2,
                                           progress=None) for e in range(2)])  # fmt: skip
    recorded = source.threads  # type: ignore[union-attr]
    assert len(recorded) == 10 and all(name.startswith("tlzoo-feed") for name in recorded)
    assert results[0] == results[1]  # the same batches, in the same order, whatever holds the images
    assert all(np.isfinite(loss) and 0 <= acc <= 1 for loss, acc in results[0])


def test_keras_a_non_finite_loss_stops_the_epoch_with_training_diverged(monkeypatch):
    from tlzoo_keras import train as keras_train

    engine = _keras_engine()
    engine.configure(lr=1e30, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
    monkeypatch.setattr(keras_train, "CHECK_EVERY", 2)
    steps = []
    images = np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3), np.uint8)
    with pytest.raises(TrainingDiverged) as raised:
        engine.train_epoch(images, np.arange(64) % 2, batch_size=4, augment=[], epoch=0, workers=0,
                           progress=lambda n: steps.append(n))  # fmt: skip
    assert "training diverged" in str(raised.value) and "not finite" in str(raised.value)
    assert len(steps) < 16  # found at a check, not only at the epoch's end


def test_the_feed_measures_how_long_its_consumer_waited_for_batches():
    import time

    from tlzoo.images.feed import Prefetcher

    class Slow:  # 50 ms a gather: a feed slower than its consumer
        shape = (40, 2, 2, 3)

        def __getitem__(self, rows: np.ndarray) -> np.ndarray:
            time.sleep(0.05)
            return np.zeros((len(rows), 2, 2, 3), np.uint8)

    labels, order = np.zeros(40, np.int64), np.arange(40)
    feed = Prefetcher(1)
    assert len(list(feed.batches(Slow(), labels, order, 5))) == 8
    assert 0.3 <= feed.waited <= 1.0  # ~ 8 x 50 ms, the consumer doing nothing
    fast = np.zeros((40, 2, 2, 3), np.uint8)
    for _ in feed.batches(fast, labels, order, 5):
        time.sleep(0.02)  # a consumer slower than its feed waits (almost) never
    assert feed.waited < 0.05
    feed.close()


def test_the_history_records_each_epochs_feed_wait(tmp_path, monkeypatch):
    import csv

    from tlzoo.training.config import TrainConfig
    from tlzoo.training.run import train

    from .datagen import write_folder

    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "data", per_class=6)
    result = train(TrainConfig(data=str(data), backbone="torch/resnet18", weights="none", image_size=32, epochs=2,
                               strategy="fine-tune", patience=0, out_dir=str(tmp_path / "runs")))  # fmt: skip
    rows = list(csv.DictReader((result.run_dir / "history.csv").open()))
    assert len(rows) == 2 and all(0 <= float(r["feed_seconds"]) <= float(r["seconds"]) for r in rows)


def test_the_epoch_line_says_when_the_feed_sets_the_pace():
    from tlzoo.training.reporter import format_epoch

    row = {"epoch": 2, "stage": "fine-tune", "loss": 0.5, "seconds": 2.0, "images_per_second": 10.0}
    assert format_epoch({**row, "feed_seconds": 0.6}) == "  epoch 2 fine-tune  loss 0.5000  2.0 s (30% waiting for batches)  10.0 img/s"
    assert format_epoch({**row, "feed_seconds": 0.05}) == "  epoch 2 fine-tune  loss 0.5000  2.0 s  10.0 img/s"  # under 5 %


def test_an_error_in_the_step_shuts_the_feed_threads_down_at_once():
    from tlzoo.images.feed import Prefetcher

    feed = Prefetcher(2)
    images, labels = np.zeros((40, 2, 2, 3), np.uint8), np.zeros(40, np.int64)
    with pytest.raises(KeyboardInterrupt):
        for _ in feed.batches(images, labels, np.arange(40), 5):
            raise KeyboardInterrupt  # Ctrl-C or SIGTERM during a step
    assert feed.closed and all(not t.is_alive() for t in _joined(feed.pool._threads))
    done = Prefetcher(1)
    assert len(list(done.batches(images, labels, np.arange(40), 5))) == 8 and not done.closed  # an epoch run through


def _joined(threads):  # type: ignore[no-untyped-def]
    for t in threads:
        t.join(timeout=5)
    return threads


def test_normalization_constants_are_made_once_per_device():
    """A tensor made from Python numbers on a GPU is a blocking copy: the constants are made once per device and
    reused by every training batch (one fused multiply-add) and every feature-extraction batch (numpy's
    arithmetic, the same values), all within float32 rounding of the host's."""
    import torch
    from tlzoo_torch.backend import affine_constants, normalization_constants, normalized_on
    from tlzoo_torch.train import normalize

    from tlzoo.images.normalize import normalize as on_host
    from tlzoo.specs import TORCHVISION_IMAGENET

    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    normalization_constants.cache_clear()
    affine_constants.cache_clear()
    batches = [normalize(torch.from_numpy(x), TORCHVISION_IMAGENET) for _ in range(3)]
    features = [normalized_on(x, TORCHVISION_IMAGENET, torch.device("cpu")) for _ in range(2)]
    assert (affine_constants.cache_info().misses, affine_constants.cache_info().hits) == (1, 2)
    assert (normalization_constants.cache_info().misses, normalization_constants.cache_info().hits) == (1, 1)
    for batch in batches:
        np.testing.assert_allclose(batch.permute(0, 2, 3, 1).numpy(), on_host(x, TORCHVISION_IMAGENET), rtol=1e-6, atol=1e-5)
    for batch in features:
        np.testing.assert_array_equal(batch.permute(0, 2, 3, 1).numpy(), on_host(x, TORCHVISION_IMAGENET))
