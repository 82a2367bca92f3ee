"""Classifying images with a trained model, whichever form it has: a run directory or an exported file.

Folders are read lazily and decoded batch by batch, so a folder larger than
memory streams through; an unreadable image is reported and skipped (or stops
the run with ``strict``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import UsageError
from ..specs import Preprocessing

if TYPE_CHECKING:
    from ..images.decode import ImageDecoder, Jpeg


class Classifier(Protocol):
    """What predict and evaluate need of a model: its labels, its input size and probabilities."""

    @property
    def classes(self) -> list[str]: ...

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def preprocessing(self) -> Preprocessing: ...

    @property
    def provider(self) -> str: ...  # what runs it, in words for a user

    def predict_proba(self, images: np.ndarray, batch_size: int = ...) -> np.ndarray: ...


@dataclass
class Prediction:
    """One image's prediction: its ``top`` classes, or for a multi-label model the ``labels`` at or over their
    thresholds (maybe none) and every label's probability (``probabilities``)."""

    path: str
    top: list[tuple[str, float]]
    labels: list[str] | None = None
    probabilities: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.probabilities is not None:
            return {"path": self.path, "labels": list(self.labels or []),
                    **{f"p:{name}": p for name, p in self.probabilities.items()}}  # fmt: skip
        return {"path": self.path, "top": [{"label": label, "probability": p} for label, p in self.top]}

    def line(self) -> str:
        """What ``predict`` prints for it."""
        if self.probabilities is not None:
            passed = "  ".join(f"{name} {self.probabilities[name]:.3f}" for name in self.labels or [])
            return f"{self.path}  {passed or 'no label'}"
        return self.path + "  " + "  ".join(f"{label} {p:.3f}" for label, p in self.top)


def thresholds_of(model: Any, threshold: float | None) -> list[float] | None:
    """A multi-label model's thresholds (``--threshold`` for every label when given); None for a single-label
    model, which refuses ``--threshold``."""
    from ..multilabel import check_threshold

    own = getattr(model, "thresholds", None)
    check_threshold(threshold, own is not None)
    if own is None:
        return None
    return [float(threshold)] * len(own) if threshold is not None else list(own)


def check_batch_options(top_k: int | None = None, batch_size: int | None = None) -> None:
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")


def iter_sources(sources: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """``(name, item)`` for every image: files as given, folders walked in sorted order, arrays and PIL images."""
    from ..images.folders import image_files, shown

    for index, source in enumerate(sources):
        if isinstance(source, (str, Path)):
            p = Path(source)
            files = image_files(p) if p.is_dir() else []
            if p.is_dir():
                if not files:
                    raise UsageError(f"{p} contains no images")
                yield from ((shown(f), f) for f in files)  # a name that is not UTF-8 shown with escapes
            elif p.is_file():
                yield shown(p), p
            else:
                raise UsageError(f"{p} does not exist")
        elif isinstance(source, np.ndarray):
            yield f"<array {index}>", source
        else:
            yield f"<image {index}>", source


def decoder_for(model: Classifier, choice: str) -> ImageDecoder | None:
    """Who decodes ``model``'s JPEG files under ``--decoder choice``: the model's own ``image_decoder(choice)``
    where it has one (a run directory computing on a CUDA device takes its framework's GPU decoder: see
    :meth:`tlzoo.runs.trained.TrainedRun.image_decoder`); otherwise Pillow, and ``gpu`` is refused. None: Pillow."""
    from ..images.decoders import check

    own = getattr(model, "image_decoder", None)
    if own is not None:
        return own(choice)  # type: ignore[no-any-return]
    check(choice)
    if choice == "gpu":
        raise UsageError("--decoder gpu is for run directories on a CUDA device: an exported file's images are "
                         "decoded by Pillow")  # fmt: skip
    return None


def decode(item: Any, size: tuple[int, int], prep: Preprocessing | None = None) -> np.ndarray:
    """An image file, uint8 array or PIL image as RGB uint8 (H, W, 3) at ``size``, resized by ``prep``'s policy
    (files are turned upright by their EXIF orientation; arrays and PIL images are taken as they are)."""
    from ..images.decode import load_image, resize_array

    if isinstance(item, Path):
        return load_image(item, size, prep)
    return resize_array(item, size, prep)


def predict_stream(model: Classifier, sources: Iterable[Any], *, top_k: int | None = None, batch_size: int = 32,
                   strict: bool = False, on_skip: Callable[[str, str], None] | None = None,
                   decoder: ImageDecoder | None = None, threshold: float | None = None) -> Iterator[Prediction]:  # fmt: skip
    """Top-k labels per image (default 5; a multi-label model's: the labels over their thresholds, or ``threshold``), decoded
    and run one batch at a time; ``decoder`` (a GPU's, see :func:`decoder_for`) takes each batch's JPEG files at
    once, Pillow everything else."""
    from ..images.decode import Jpeg, decode_jpegs, read_for

    check_batch_options(top_k, batch_size)
    thresholds = thresholds_of(model, threshold)
    if thresholds is not None and top_k is not None:
        raise UsageError("top_k is for single-label models: a multi-label model gives the labels over their "
                         "thresholds (set one for all with threshold=)")  # fmt: skip
    top_k = 5 if top_k is None else top_k
    classes = model.classes
    k = min(top_k, len(classes))
    names: list[str] = []
    images: list[np.ndarray | Jpeg | Exception] = []

    def unreadable(name: str, got: Exception) -> None:
        why = f"{type(got).__name__}: {got}"
        if strict:
            raise UsageError(f"{name} is not an image tlzoo can read ({why}); without --strict it is skipped") from None
        if on_skip is not None:
            on_skip(name, why)

    def flush() -> Iterator[Prediction]:
        jpegs = [i for i, item in enumerate(images) if isinstance(item, Jpeg)]
        if jpegs:  # a JPEG is read, not decoded, only when there is a decoder
            assert decoder is not None
            for i, pixels in zip(jpegs, decode_jpegs([(names[i], images[i]) for i in jpegs], decoder,  # type: ignore[misc]
                                                     model.input_size, model.preprocessing)):  # fmt: skip
                images[i] = pixels
        kept: list[tuple[str, np.ndarray]] = []
        for name, item in zip(names, images):
            if isinstance(item, Exception):
                unreadable(name, item)
            elif isinstance(item, np.ndarray):
                kept.append((name, item))
        if kept:
            proba = model.predict_proba(np.stack([pixels for _, pixels in kept]), batch_size=batch_size)
            order = np.argsort(-proba, axis=1)
            for row, (name, _) in enumerate(kept):
                if thresholds is None:
                    yield Prediction(name, [(classes[j], float(proba[row, j])) for j in order[row, :k]])
                    continue
                chosen = [j for j in order[row] if proba[row, j] >= thresholds[j]]
                yield Prediction(name, [(classes[j], float(proba[row, j])) for j in chosen], [classes[j] for j in chosen],
                                 {c: float(proba[row, j]) for j, c in enumerate(classes)})  # fmt: skip
        names.clear()
        images.clear()

    from concurrent.futures import ThreadPoolExecutor

    from ..images.batches import ahead, default_threads

    read_jpeg = read_for(decoder, model.input_size, model.preprocessing) if decoder is not None else None

    def read(entry: tuple[str, Any]) -> np.ndarray | Jpeg | Exception:
        try:
            if read_jpeg is not None and isinstance(entry[1], Path):
                return read_jpeg(str(entry[1]))  # a JPEG's bytes for the decoder, any other file's pixels
            return decode(entry[1], model.input_size, model.preprocessing)
        except Exception as exc:  # PIL raises many types for truncated or non-image files
            return exc

    entries = list(iter_sources(sources))  # every name checked before the first prediction
    seen = len(entries)
    # Decoded on a pool of threads (one per core the process may use), a few batches ahead of the model.
    with ThreadPoolExecutor(default_threads(), thread_name_prefix="tlzoo-decode") as pool:
        for (name, _), got in zip(entries, ahead(pool, read, entries, depth=3 * batch_size)):
            if isinstance(got, Exception):
                unreadable(name, got)
                continue
            images.append(got)
            names.append(name)
            if len(images) == batch_size:
                yield from flush()
    if images:
        yield from flush()
    if seen == 0:
        raise UsageError("no images given")
