"""FFCV's quasi-random order for training images in a decoded-pixel store larger than memory: every image once an
epoch, each batch from a few blocks of the store's files, repeatable by seed and epoch, in both engines."""

from __future__ import annotations

import numpy as np
import pytest

from tlzoo.images import store
from tlzoo.specs import TORCHVISION_IMAGENET
from tlzoo.images import order


def _stored(tmp_path, n: int, size: int = 12):  # type: ignore[no-untyped-def]
    from PIL import Image

    files = []
    rng = np.random.default_rng(0)
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(path)
        files.append(str(path))
    return store.images(tmp_path / "cache", files, (size, size), TORCHVISION_IMAGENET).images


def test_the_order_visits_every_image_once_with_each_window_drawn_from_a_few_blocks(monkeypatch):
    monkeypatch.setattr(order, "BLOCK_BYTES", 10 * 100)  # 10 images of 100 bytes a block
    monkeypatch.setattr(order, "WINDOW", 3)
    physical = np.arange(990)[::-1].copy()  # the store's file order, as positions: 99 blocks, 33 windows
    block_of = {int(p): i // 10 for i, p in enumerate(physical)}
    first = order.quasi_random(physical.copy(), 100, np.random.default_rng([0, 1]))
    assert sorted(first.tolist()) == list(range(990))
    for start in range(0, 990, 30):  # a window's 30 images come from 3 blocks
        assert len({block_of[int(p)] for p in first[start : start + 30]}) == 3
    assert not np.array_equal(first, physical)  # shuffled, blocks and within them
    again = order.quasi_random(physical.copy(), 100, np.random.default_rng([0, 1]))
    other = order.quasi_random(physical.copy(), 100, np.random.default_rng([0, 2]))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_the_ranks_take_disjoint_shards_padded_to_the_same_length():
    shards = [order.shard(np.arange(10), rank, 4) for rank in range(4)]
    assert [len(s) for s in shards] == [3, 3, 3, 3]
    assert sorted(np.concatenate(shards).tolist()) == [0, 0, 1, 1, *range(2, 10)]


def test_only_a_store_larger_than_half_the_memory_available_is_read_in_quasi_random_order(tmp_path, monkeypatch):
    images = _stored(tmp_path, 20)
    assert images.nbytes == 20 * 12 * 12 * 3
    assert sorted(images.physical_order().tolist()) == list(range(20))
    monkeypatch.setattr(order, "available_memory", lambda: 10**9)
    assert order.plan(images) is None  # fits: the engines' own shuffle
    monkeypatch.setattr(order, "available_memory", lambda: 1000)
    line = order.plan(images)
    assert line is not None and line.startswith("training batches in quasi-random order: the 0.0 GiB of training images")
    assert order.plan(np.zeros((20, 12, 12, 3), np.uint8)) is None  # an array in memory: no store to read
    monkeypatch.setattr(order, "available_memory", lambda: None)
    assert order.plan(images) is None  # unknown (not Linux): the plain shuffle


class _Recording:
    """The store's images, recording the rows each gather asks for."""

    def __init__(self, images) -> None:  # type: ignore[no-untyped-def]
        self.images, self.rows = images, []
        self.shape, self.nbytes = images.shape, images.nbytes

    def __len__(self) -> int:
        return len(self.images)

    def physical_order(self) -> np.ndarray:
        return self.images.physical_order()

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        self.rows.extend(int(r) for r in rows)
        return self.images[rows]


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_both_engines_train_in_the_quasi_random_order_and_say_so(tmp_path, monkeypatch, framework):
    from tlzoo.adapters import adapter_for
    from tlzoo.backbone import get_backbone
    from tlzoo.registry import get_registry

    monkeypatch.setenv("TLZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(order, "available_memory", lambda: 1000)
    images = _Recording(_stored(tmp_path, 24, size=32))
    spec = get_registry().resolve("resnet18" if framework == "torch" else "mobilenet_v2", framework)
    backbone = get_backbone(spec, pretrained=False, input_size=(32, 32), seed=0)
    engine = adapter_for(framework).engine(backbone, 2, tap=None, dropout=0.0, seed=3, device="cpu")
    said = []
    engine.say = said.append
    engine.build()
    engine.configure(lr=1e-3, backbone_lr_mult=1.0, optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
    for epoch in (0, 1):
        images.rows.clear()
        engine.train_epoch(images, np.arange(24) % 2, batch_size=8, augment=[], epoch=epoch, workers=0, progress=None)
        assert images.rows == order.epoch_order(images, 3, epoch).tolist()
    assert len(said) == 1 and said[0].startswith("training batches in quasi-random order")

