"""``--tensorboard``: every epoch's losses and accuracies as TensorBoard scalars, beside ``history.csv``.

Written with the ``tensorboard`` package's own event-file writer, so a torch run never imports TensorFlow
(and a Keras run never imports torch). ``tensorboard --logdir runs`` shows every run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from .reporter import Reporter

FOLDER = "tensorboard"


def check_available() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise MissingDependencyError("tensorboard", "--tensorboard") from None


class TensorBoardReporter(Reporter):
    """Passes everything on to ``inner`` and writes each epoch's numbers as scalars."""

    def __init__(self, inner: Reporter, logdir: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.inner = inner
        self.writer = EventFileWriter(str(logdir))

    def epoch(self, row: dict[str, Any]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=_tag(key), simple_value=float(value)) for key, value in row.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"]  # fmt: skip
        self.writer.add_event(Event(wall_time=time.time(), step=int(row.get("epoch", 1)), summary=Summary(value=values)))
        self.writer.flush()
        self.inner.epoch(row)

    def close(self) -> None:
        self.writer.close()

    def info(self, message: str) -> None:
        self.inner.info(message)

    def warn(self, message: str) -> None:
        self.inner.warn(message)

    def class_counts(self, title: str, counts: dict[str, int], images: int | None = None) -> None:
        if images is None:
            self.inner.class_counts(title, counts)
        else:
            self.inner.class_counts(title, counts, images)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Any]:
        with self.inner.task(description, total) as advance:
            yield advance


def _tag(key: str) -> str:
    """``val_loss`` -> ``loss/val``, ``loss`` -> ``loss/train``: train and validation on one chart."""
    if key.startswith("val_"):
        return f"{key[4:]}/val"
    if key in ("loss", "accuracy"):
        return f"{key}/train"
    return key
