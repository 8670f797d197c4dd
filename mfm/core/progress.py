"""Rich progress bars that fall back to log lines with ``quiet``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class Bar:
    """A progress bar for one piece of long work; silent when ``quiet``."""

    def __init__(self, progress: Progress | None, task: int | None, label: str) -> None:
        self._progress, self._task, self.label = progress, task, label

    def advance(self, n: int = 1, **fields: object) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=n, **fields)


@contextmanager
def progress_bar(
    label: str, total: int, quiet: bool = False, unit: str = "items", transient: bool = False
) -> Iterator[Bar]:
    """Show a bar with items/s and an optional ``loss`` field while the block runs.

    ``transient`` bars vanish when done (checks whose outcome is printed anyway).
    """
    if quiet or total <= 0:
        yield Bar(None, None, label)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=transient) as prog:
        task = prog.add_task(label, total=total, loss="", rate="")
        yield _RateBar(prog, task, label, unit)


class _RateBar(Bar):
    """A bar that shows its own throughput (items per second since it started)."""

    def __init__(self, progress: Progress, task: int, label: str, unit: str) -> None:
        super().__init__(progress, task, label)
        self.unit, self.done, self.start = unit, 0, time.perf_counter()

    def advance(self, n: int = 1, **fields: object) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        rate = f"{self.done / elapsed:,.0f} {self.unit}/s" if elapsed > 0 else ""
        super().advance(n, rate=rate, **fields)


def log(message: str) -> None:
    """Print a status line to stderr (also with quiet: it is the log)."""
    console.print(message, highlight=False, soft_wrap=True, markup=False)
