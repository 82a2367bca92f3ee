"""How training talks to the person running it. The API default is silent; the CLI uses rich."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .engine import ProgressFn


class Reporter:
    """Silent reporter: the Python API's default."""

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def class_counts(self, title: str, counts: dict[str, int]) -> None:
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

    def class_counts(self, title: str, counts: dict[str, int]) -> None:
        from rich.table import Table
        from rich.text import Text

        total = sum(counts.values())
        table = Table(title=Text(title), title_justify="left")
        table.add_column("class")
        table.add_column("images", justify="right")
        table.add_column("share", justify="right")
        for name, n in counts.items():
            table.add_row(Text(name), str(n), f"{n / total:.1%}" if total else "-")  # class names are literal text
        self.console.print(table)
        present = [n for n in counts.values() if n]
        if present and max(present) >= 3 * min(present):
            self.warn(f"classes are imbalanced (largest {max(present)} vs smallest {min(present)} images)")

    def epoch(self, row: dict[str, Any]) -> None:
        parts = [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if v is not None]
        self.console.print("  " + "  ".join(parts), markup=False, highlight=False)

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
