"""How training talks to the person running it. The API default is silent; the CLI uses rich."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .engine import ProgressFn


_SHORT = {"accuracy": "acc", "val_accuracy": "val_acc"}


FEED_SHOWN = 0.05  # share of an epoch spent waiting for batches from which the epoch line says so


def format_epoch(row: dict[str, Any]) -> str:
    """One epoch as one short line: ``  epoch 2 fine-tune  loss 0.1624  acc 1.0000  val_loss ...  0.3 s  71.3 img/s``."""
    parts: list[str] = []
    for key, value in row.items():
        if value is None or key == "epoch":
            continue
        if key == "stage":
            parts.insert(0, f"epoch {row.get('epoch')} {value}")
        elif key == "seconds":
            waited = float(row.get("feed_seconds") or 0.0)
            # The feed's stall is shown only where it sets the pace (history.csv always has it).
            stall = f" ({waited / float(value):.0%} waiting for batches)" if waited >= FEED_SHOWN * float(value) > 0 else ""
            parts.append(f"{float(value):.1f} s{stall}")
        elif key == "feed_seconds":
            continue
        elif key == "images_per_second":
            parts.append(f"{float(value):.1f} img/s")
        elif isinstance(value, float):
            parts.append(f"{_SHORT.get(key, key)} {value:.4f}" if key != "C" else f"C {value:g}")
        else:
            parts.append(f"{_SHORT.get(key, key)} {value}")
    return "  " + "  ".join(parts)


class Reporter:
    """Silent reporter: the Python API's default."""

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def class_counts(self, title: str, counts: dict[str, int], images: int | None = None) -> None:
        pass

    def epoch(self, row: dict[str, Any]) -> None:
        pass

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[ProgressFn]:
        yield lambda n: None


class WarningsReporter(Reporter):
    """Quiet and JSON output: nothing on stdout, but warnings still reach stderr."""

    def __init__(self, err_console: Any) -> None:
        self.err_console = err_console

    def warn(self, message: str) -> None:
        self.err_console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)


class RichReporter(Reporter):
    """Progress bars with ETA, per-epoch loss/accuracy and class counts on a rich console."""

    def __init__(self, console: Any, err_console: Any | None = None) -> None:
        self.console = console
        self.err_console = err_console or console

    def info(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        self.err_console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)

    def class_counts(self, title: str, counts: dict[str, int], images: int | None = None) -> None:
        from rich.table import Table
        from rich.text import Text

        # ``images``: a multi-label set's, whose counts are each label's positives (a share of the images)
        total = images if images is not None else sum(counts.values())
        table = Table(title=Text(title), title_justify="left")
        table.add_column("label" if images is not None else "class")
        table.add_column("positives" if images is not None else "images", justify="right")
        table.add_column("of the images" if images is not None else "share", justify="right")
        for name, n in counts.items():
            table.add_row(Text(name), str(n), f"{n / total:.1%}" if total else "-")  # class names are literal text
        self.console.print(table)  # (what an imbalance does is --balance's line: tlzoo.balance)

    def epoch(self, row: dict[str, Any]) -> None:
        self.console.print(format_epoch(row), markup=False, highlight=False)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[ProgressFn]:
        if not self.console.is_terminal:  # a log file or a pipe gets whole records, no bars
            yield lambda n: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=True,
        ) as progress:  # fmt: skip
            task_id = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task_id, n)
