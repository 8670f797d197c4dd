"""Problems found in a bundle, each with file, row and column, and the one-line error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfm.core.errors import CityError, oneline

ROW_CAP = 20
"""Row-level problems reported per file, column and rule before one summary line."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle.

    Attributes:
        file: Path relative to the bundle (e.g. ``"pois.parquet"``).
        row: 0-based data row (CSV: not counting the header), or None for a file-level
            problem.
        column: Column (or manifest key) concerned, or None.
        message: What is wrong and how to fix it, one line.
    """

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}"
        if self.column is not None:
            where += f" column {self.column}"
        return f"{where}: {self.message}"


class ProblemReport:
    """Collects problems; caps row-level reports per rule."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, file: str, message: str, *, row: int | None = None, column: str | None = None):
        self.problems.append(Problem(file, row, column, oneline(message, 400)))

    def rows(
        self,
        file: str,
        column: str | None,
        bad: np.ndarray,
        message: Callable[[int], str],
        what: str,
    ) -> None:
        """Report each row where ``bad`` is True (capped at ROW_CAP, then one summary)."""
        idx = np.flatnonzero(np.asarray(bad, dtype=bool))
        for r in idx[:ROW_CAP]:
            self.add(file, message(int(r)), row=int(r), column=column)
        if len(idx) > ROW_CAP:
            self.add(file, f"... and {len(idx) - ROW_CAP} more rows: {what}", column=column)


# --------------------------------------------------------------------------- images


def one_line_error(problems: list[Problem], root: Path | str) -> CityError:
    msg = str(problems[0])
    if len(problems) > 1:
        n = len(problems) - 1
        msg += f"; ({n} more problem{'s' if n > 1 else ''}: run `mfm city validate {root}`)"
    return CityError(msg)
