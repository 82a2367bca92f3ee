"""Training batches gathered ahead of the step on a pool of threads, for every framework's engine.

Each batch is one gather of its rows from the images (the decoded-pixel store's
:class:`tlzoo.images.store.StoreImages`, or an array: no per-image Python), made on a worker thread while the step
before it computes. An engine's ``convert`` runs on that thread too (torch pins the batch for an asynchronous
copy to the GPU; Keras makes it a tensor on its device). ``--workers N`` is the number of threads (at least
one). An engine makes its :class:`Prefetcher` once, not every epoch, and reports how long each epoch waited
on it (``feed_seconds`` in the run's history: the share of an epoch the input path, not the device, set).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


def _as_arrays(x: np.ndarray, y: np.ndarray) -> Any:
    return x, y


class Prefetcher(Generic[T]):
    """``batches`` of ``(images[rows], labels[rows])`` in ``order``, at most ``threads + 1`` gathered ahead,
    each passed through ``convert(x, y)`` on the thread that gathered it."""

    def __init__(self, threads: int, convert: Callable[[np.ndarray, np.ndarray], T] = _as_arrays) -> None:
        self.threads = max(1, threads)
        self.convert = convert
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tlzoo-feed")
        self.waited = 0.0  # seconds the last ``batches`` kept its consumer waiting for a batch (the feed's stall)
        self.closed = False  # closed (by an error in a step, or by its engine): the engine makes a new one

    def _gather(self, images: Any, labels: np.ndarray, rows: np.ndarray) -> T:
        return self.convert(np.ascontiguousarray(images[rows]), np.asarray(labels[rows], np.int64))

    def batches(self, images: Any, labels: np.ndarray, order: np.ndarray, batch_size: int) -> Generator[T, None, None]:
        starts = iter(range(0, len(order), batch_size))
        pending: deque[Future[T]] = deque()

        def submit() -> None:
            start = next(starts, None)
            if start is not None:
                pending.append(self.pool.submit(self._gather, images, labels, order[start : start + batch_size]))

        for _ in range(self.threads + 1):
            submit()
        self.waited = 0.0
        finished = False
        try:
            while pending:
                started = time.perf_counter()
                batch = pending.popleft().result()
                self.waited += time.perf_counter() - started
                submit()
                yield batch
            finished = True
        finally:  # an error or Ctrl-C in the step: nothing more is gathered, and the threads go now, not at exit
            for future in pending:
                future.cancel()
            if not finished:
                self.close()

    def close(self) -> None:
        self.closed = True
        self.pool.shutdown(wait=False, cancel_futures=True)
