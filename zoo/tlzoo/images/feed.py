"""Training batches gathered ahead of the step on a pool of threads, for every framework's engine.

Each batch is one gather of its rows from the images (the decoded-pixel store's
:class:`tlzoo.images.store.StoreImages`, or an array: no per-image Python), made on a worker thread while the step
before it computes. ``--workers N`` is the number of threads (at least one). An engine makes its
:class:`Prefetcher` once, not every epoch, and reports how long each epoch waited on it (``feed_seconds`` in the
run's history: the share of an epoch the input path, not the device, set).

Two ways to receive a batch:

- ``convert(x, y)`` runs on the gathering thread and its result is the batch (Keras makes it a tensor on its
  device there). Each batch is then gathered into memory of its own.
- ``allocate(shape, dtype)`` (a framework's pinned-memory allocator) makes a ring of reusable buffers, and
  every batch is gathered straight into one of them: the one host copy a batch costs, into memory the device
  can copy from without waiting. From the store, a batch is gathered in the store's file order (one take per
  segment) and its :attr:`Gathered.order` puts it back in the epoch's on the device. The batch arrives as a :class:`Gathered`; its consumer starts the copy to
  the device and hands :meth:`Prefetcher.release` a fence (a callable that returns once that copy is done),
  which the thread that next gathers into the same buffer waits on first.

``draw(step, n)``, when given, is called on the gathering thread too: the batch's augmentation parameters (see
:mod:`tlzoo.images.augment`), drawn by its position in the epoch, so a resumed run draws the same whatever
order the threads ran in.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

Allocate = Callable[[tuple[int, ...], Any], np.ndarray]
Draw = Callable[[int, int], "np.ndarray | None"]


@dataclass
class Gathered:
    """One batch in a ring buffer: views of the buffer's first ``len(y)`` rows (valid until released)."""

    x: np.ndarray
    y: np.ndarray
    theta: np.ndarray | None  # the augmentation parameters ``draw`` made, or None
    step: int
    slot: int
    # The store's images are gathered in its file order (a take per segment, not per run of the epoch's order):
    # ``x[order]`` is the batch in the epoch's order, as ``y`` and ``theta`` are. None: ``x`` is in it already.
    order: np.ndarray | None = None


class _Slot:
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y
        self.theta: np.ndarray | None = None
        self.order: np.ndarray | None = None
        self.fence: Callable[[], None] | None = None  # returns once the device no longer reads this buffer
        self.lock = threading.Lock()


def gather_into(images: Any, rows: np.ndarray, out: np.ndarray) -> None:
    """``images[rows]`` written into ``out``: the store's own gather, or for an array numpy's ``take`` (its
    ``clip`` mode writes ``out`` directly, where ``raise`` would fill a temporary first; ``rows`` are checked
    here)."""
    if hasattr(images, "gather"):
        images.gather(rows, out=out)
        return
    if not isinstance(images, np.ndarray):  # any other indexable: its own fancy index, then a copy
        out[...] = images[rows]
        return
    if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
        raise IndexError(f"batch rows out of range 0..{len(images) - 1}")
    np.take(images, rows, axis=0, out=out, mode="clip")


def _as_arrays(x: np.ndarray, y: np.ndarray) -> Any:
    return x, y


class Prefetcher(Generic[T]):
    """``batches`` of ``images[rows]`` and ``labels[rows]`` in ``order``, at most ``threads + 1`` gathered ahead
    (see the module for ``convert``, ``allocate`` and ``draw``)."""

    def __init__(self, threads: int, convert: Callable[[np.ndarray, np.ndarray], T] = _as_arrays,
                 allocate: Allocate | None = None) -> None:  # fmt: skip
        self.threads = max(1, threads)
        self.convert = convert
        self.allocate = allocate
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tlzoo-feed")
        self.waited = 0.0  # seconds the last ``batches`` kept its consumer waiting for a batch (the feed's stall)
        self.closed = False  # closed (by an error in a step, or by its engine): the engine makes a new one
        self._ring: list[_Slot] = []
        self._ring_shape: tuple[tuple[int, ...], ...] = ()

    @property
    def ring_size(self) -> int:
        """Buffers in the ring: one per batch gathered ahead, and the one its consumer is copying from."""
        return self.threads + 2

    def _slots(self, shape: tuple[int, ...], label_shape: tuple[int, ...] = ()) -> list[_Slot]:
        """The ring for batches of ``shape`` whose labels are each ``label_shape`` (a multi-label set's: one 0/1
        per label), made once and kept while the shapes stay."""
        if self._ring_shape != (shape, label_shape):
            assert self.allocate is not None
            self._ring = [_Slot(self.allocate(shape, np.uint8), self.allocate((shape[0], *label_shape), np.int64))
                          for _ in range(self.ring_size)]  # fmt: skip
            self._ring_shape = (shape, label_shape)
        return self._ring

    def release(self, batch: Gathered, fence: Callable[[], None] | None) -> None:
        """``batch``'s buffer may be gathered into again once ``fence()`` returns (None: at once)."""
        self._ring[batch.slot].fence = fence

    def _gather(self, images: Any, labels: np.ndarray, rows: np.ndarray) -> T:
        x = np.empty((len(rows), *images.shape[1:]), np.uint8)
        gather_into(images, rows, x)
        return self.convert(x, np.asarray(labels[rows], np.int64))

    def _gather_ring(self, images: Any, labels: np.ndarray, rows: np.ndarray, step: int, index: int,
                     draw: Draw | None) -> Gathered:  # fmt: skip
        slot = self._ring[index]
        with slot.lock:
            if slot.fence is not None:
                slot.fence()  # the device's copy out of this buffer (a batch ring_size steps ago) has finished
                slot.fence = None
            n = len(rows)
            order = None
            read_order = getattr(images, "read_order", None)
            if read_order is not None:
                sorted_ = read_order(rows)
                gather_into(images, rows[sorted_], slot.x[:n])
                if slot.order is None:
                    assert self.allocate is not None
                    slot.order = self.allocate((len(slot.x),), np.int64)
                slot.order[sorted_] = np.arange(n)  # the inverse: where each of the epoch's rows went
                order = slot.order[:n]
            else:
                gather_into(images, rows, slot.x[:n])
            np.take(labels, rows, axis=0, out=slot.y[:n])
            theta = draw(step, n) if draw is not None else None
            if theta is not None:
                if slot.theta is None or slot.theta.shape[1:] != theta.shape[1:] or len(slot.theta) < n:
                    assert self.allocate is not None
                    slot.theta = self.allocate((len(slot.x), *theta.shape[1:]), theta.dtype)
                slot.theta[:n] = theta
                theta = slot.theta[:n]
            return Gathered(slot.x[:n], slot.y[:n], theta, step, index, order)

    def batches(self, images: Any, labels: np.ndarray, order: np.ndarray, batch_size: int,
                draw: Draw | None = None) -> Generator[Any, None, None]:  # fmt: skip
        """Each batch of ``order`` in turn: ``convert``'s result, or a :class:`Gathered` with ``allocate``."""
        if draw is not None and self.allocate is None:
            raise ValueError("draw needs the ring buffers (allocate)")
        starts = iter(enumerate(range(0, len(order), batch_size)))
        pending: deque[Future[Any]] = deque()
        labels = np.asarray(labels, np.int64)
        if self.allocate is not None:
            self._slots((min(batch_size, max(len(order), 1)), *images.shape[1:]), labels.shape[1:])

        def submit() -> None:
            item = next(starts, None)
            if item is None:
                return
            step, start = item
            rows = order[start : start + batch_size]
            if self.allocate is None:
                pending.append(self.pool.submit(self._gather, images, labels, rows))
            else:
                slot = step % self.ring_size
                pending.append(self.pool.submit(self._gather_ring, images, labels, rows, step, slot, draw))

        for _ in range(self.threads + 1):
            submit()
        self.waited = 0.0
        finished = False
        try:
            while pending:
                started = time.perf_counter()
                batch = pending.popleft().result()
                self.waited += time.perf_counter() - started
                yield batch
                submit()  # after the consumer is done with the batch before: its buffer is the one reused
            finished = True
        finally:  # an error or Ctrl-C in the step: nothing more is gathered, and the threads go now, not at exit
            for future in pending:
                future.cancel()
            if not finished:
                self.close()

    def close(self) -> None:
        self.closed = True
        self.pool.shutdown(wait=False, cancel_futures=True)
