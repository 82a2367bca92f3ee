"""Decoded batches: a pool of threads decodes a few batches ahead of whoever consumes them, so a dataset larger
than memory streams (feature extraction), and one that fits is read whole (:func:`decode_all`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..errors import DataError, UsageError
from ..specs import Preprocessing
from .decode import SQUASH, ImageDecoder, Jpeg, available_cores, decode_jpegs, load_image, read_for
from .sets import ImageList, ImageSet, Sample, skipped_text, check_lost_classes, labelled

T = TypeVar("T")


R = TypeVar("R")


@dataclass
class DecodedBatch:
    """One batch of :func:`decode_batches`: the readable images, their positions in the list, the others."""

    index: np.ndarray
    images: np.ndarray
    skipped: list[tuple[str, str]]


def default_threads() -> int:
    """One decoding thread per core this process may use (Pillow releases the GIL while it decodes)."""
    return available_cores()


def decode_batches(paths: list[str], size: tuple[int, int], *, batch_size: int, threads: int | None = None,
                   strict: bool = False, prep: Preprocessing | None = None,
                   load: Callable[[str], np.ndarray | Jpeg] | None = None, decoder: ImageDecoder | None = None,
                   decoded: Callable[[str, Jpeg, np.ndarray], None] | None = None,
                   allocate: Callable[[tuple[int, ...], type], np.ndarray] | None = None,
                   on_device: bool = False) -> Iterator[DecodedBatch]:  # fmt: skip
    """Decode ``paths`` in order (by ``prep``'s resize policy, see :func:`tlzoo.decode.load_image`),
    ``batch_size`` at a time, on a pool of threads that works at most three batches ahead of the consumer:
    memory holds a few batches, never the dataset. Unreadable files (and images over the pixel limit) are
    reported in their batch's ``skipped`` (``strict``: raise :class:`DataError` instead).

    ``decoder`` (a GPU's) takes the batch's JPEGs, the threads reading them; Pillow the rest. ``load(path)``,
    when given, replaces the threads' read (the decoded-pixel store's :class:`tlzoo.store.Stream`): it gives
    pixels, or a :class:`Jpeg` for ``decoder``, whose pixels then go to ``decoded(path, jpeg, pixels)``.
    ``allocate(shape, dtype)`` makes the memory each batch is stacked into (a framework's pinned memory, which
    its device copies from without waiting).

    ``on_device`` (with a ``decoder`` that offers ``decode_to_device``): the JPEGs' pixels stay where the
    decoder made them, and a batch with any of them is the decoder's batch on its device (``images`` is then
    not an array: ``decoder.host_batch`` makes it one); the host images of the batch join it there. Their
    copies for ``decoded`` come back to the host and are handed over on a thread of their own, off the path
    of the batches."""
    ahead = 3 * batch_size
    to_device = getattr(decoder, "decode_to_device", None) if on_device else None
    writes: list[Future[None]] = []
    read = load or (read_for(decoder, size, prep) if decoder is not None else lambda path: load_image(path, size, prep))
    with ThreadPoolExecutor(threads or default_threads(), thread_name_prefix="tlzoo-decode") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="tlzoo-store-write") as writer:
        pending: deque[Future[np.ndarray | Jpeg]] = deque()
        submitted = 0
        for start in range(0, len(paths), batch_size):
            stop = min(start + batch_size, len(paths))
            while submitted < min(len(paths), stop + ahead):
                pending.append(pool.submit(read, paths[submitted]))
                submitted += 1
            got: dict[int, Any] = {}
            device_rows = False
            for i in range(start, stop):
                try:
                    got[i] = pending.popleft().result()
                except UsageError:  # a setting (TLZOO_MAX_IMAGE_PIXELS) the user must fix, not this file's fault
                    raise
                except Exception as exc:  # PIL raises many types for truncated or non-image files
                    got[i] = exc
            got_jpeg = {i: item for i, item in got.items() if isinstance(item, Jpeg)}
            jpegs = [i for i, item in got.items() if isinstance(item, Jpeg)]
            if jpegs and to_device is not None:
                rows, host = to_device([got[i] for i in jpegs], size, prep or SQUASH, decoded is not None)  # type: ignore[misc]
                failed = [i for i, row in zip(jpegs, rows) if row is None]
                for i, row in zip(jpegs, rows):
                    if row is not None:
                        got[i], device_rows = row, True
                if decoded is not None and len(failed) < len(jpegs):
                    done = [(paths[i], got_jpeg[i], k) for k, i in enumerate(jpegs) if rows[k] is not None]
                    writes = [w for w in writes if not w.done() or w.result()]  # (result: raise what failed)
                    if len(writes) >= 8:  # the store's writes fall behind: hold at most 8 batches' copies
                        writes.pop(0).result()
                    writes.append(writer.submit(_hand_over, decoded, done, host))
                jpegs = failed  # Pillow's, below
                for i in failed:
                    got[i] = got_jpeg[i]
            if jpegs:
                assert decoder is not None, "a Jpeg is only read for a decoder"
                out = decode_jpegs([(paths[i], got[i]) for i in jpegs], decoder, size, prep)  # type: ignore[misc]
                for i, pixels in zip(jpegs, out):
                    if decoded is not None and not isinstance(pixels, Exception):
                        decoded(paths[i], got[i], pixels)  # type: ignore[arg-type]
                    got[i] = pixels
            index: list[int] = []
            images: list[np.ndarray] = []
            skipped: list[tuple[str, str]] = []
            for i in range(start, stop):
                item = got[i]
                assert not isinstance(item, Jpeg)
                if isinstance(item, BaseException):
                    if strict:
                        for future in pending:
                            future.cancel()
                        raise DataError(f"cannot read image {paths[i]}: {type(item).__name__}: {item}") from item
                    skipped.append((str(paths[i]), f"{type(item).__name__}: {item}"))
                else:
                    images.append(item)
                    index.append(i)
            stacked: Any = np.zeros((0, size[0], size[1], 3), np.uint8)
            if device_rows and images:
                stacked = decoder.batch_on_device(images, size, allocate)  # type: ignore[union-attr]
            elif images:
                shape = (len(images), size[0], size[1], 3)
                stacked = np.stack(images, out=allocate(shape, np.uint8)) if allocate is not None else np.stack(images)
            yield DecodedBatch(np.asarray(index, np.int64), stacked, skipped)
        for write in writes:
            write.result()  # the store's last copies are in (and a failure to write them is raised here)


def _hand_over(decoded: Callable[[str, Jpeg, np.ndarray], None], done: list[tuple[str, Jpeg, int]], host: Any) -> None:
    """``decoded(path, jpeg, pixels)`` for each JPEG a device decoded, once its batch's copy reached the host."""
    pixels = np.asarray(host)
    for path, jpeg, k in done:
        decoded(path, jpeg, np.ascontiguousarray(pixels[k]))


def ahead(pool: ThreadPoolExecutor, work: Callable[[T], R], items: Sequence[T], depth: int = 256) -> Iterator[R]:
    """``pool.map(work, items)`` in order, keeping at most ``depth`` results ahead of the consumer (``map`` would
    submit every item at once and hold what is done before it is consumed)."""
    pending: deque[Future[R]] = deque()
    position = 0
    while position < len(items) or pending:
        while position < len(items) and len(pending) < depth:
            pending.append(pool.submit(work, items[position]))
            position += 1
        yield pending.popleft().result()


def load(samples: list[Sample] | ImageList, size: tuple[int, int], classes: list[str] | None = None, *,
         strict: bool = False, progress: Callable[[], None] | None = None, whole_classes: bool = True,
         threads: int | None = None, prep: Preprocessing | None = None) -> ImageSet:  # fmt: skip
    """Decode and resize every image; corrupt ones are skipped and listed (or raise with ``strict``).

    ``whole_classes``: the samples are a whole dataset, so a class whose every image is unreadable is an
    error (a batch of a larger dataset passes False)."""
    files = samples if isinstance(samples, ImageList) else labelled(samples, classes)
    images, index, skipped = decode_all(files.paths, size, strict=strict, progress=progress, threads=threads, prep=prep)
    if not len(index):
        raise DataError("no readable images: " + skipped_text(skipped))
    if whole_classes:
        check_lost_classes(files, [files.labels[index]])
    return ImageSet(images, files.labels[index], [files.paths[i] for i in index], files.classes, skipped)


def decode_all(paths: list[str], size: tuple[int, int], *, strict: bool = False,
               progress: Callable[[], None] | None = None, threads: int | None = None,
               prep: Preprocessing | None = None,
               decoder: ImageDecoder | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:  # fmt: skip
    """Every readable image of ``paths`` in one array, their positions in ``paths``, and the unreadable ones
    (``progress()`` after each image read; ``decoder``: see :func:`decode_batches`)."""
    images, index, skipped = [], [], []
    for batch in decode_batches(paths, size, batch_size=64, threads=threads, strict=strict, prep=prep,
                                decoder=decoder):  # fmt: skip
        images.append(batch.images)
        index.append(batch.index)
        skipped += batch.skipped
        if progress is not None:
            for _ in batch.index:
                progress()
    if not images:
        return np.zeros((0, size[0], size[1], 3), np.uint8), np.zeros(0, np.int64), skipped
    return np.concatenate(images), np.concatenate(index), skipped
