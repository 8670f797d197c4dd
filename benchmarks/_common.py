"""Shared helpers of the benchmark scripts: machine facts, timing, tables, JSON results.

Not a test module and not part of the ``mfm`` package: the scripts put ``benchmarks/`` on
``sys.path`` (Python does so for the script's own folder) and import this file directly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def parse_args(description: str, default_size: str) -> argparse.Namespace:
    """The common command line: ``[--size small|medium] [--quick]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=("small", "medium"), default=default_size)
    parser.add_argument("--quick", action="store_true", help="one repeat, smaller inputs")
    parser.add_argument("--repeats", type=int, default=None, help="best of this many (3)")
    add_threads(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    return args


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch intra-op threads (default: torch's, i.e. the core count)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's choice; 1 helps on a busy box)",
    )


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` to torch (no-op for None)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def git_state() -> str | None:
    """``<short HEAD>`` plus ``+dirty`` when ``mfm/`` has uncommitted changes (or None)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "mfm"],
            cwd=HERE.parent,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, cores, RAM, load, versions, date."""
    import numpy as np
    import torch

    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": _cpu_model(),
        "ram_gib": _ram_gib(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "cuda": torch.cuda.is_available(),
        "git": git_state(),
    }


def best_of(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[float, Any]:
    """Best wall time (seconds) of ``repeats`` calls of ``fn``, after one untimed warm-up."""
    result = fn() if warmup else None
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def result_name(name: str, threads: int | None) -> str:
    """``name``, or ``name-threadsN`` for a run with ``--threads N`` (kept apart)."""
    return name if threads is None else f"{name}-threads{threads}"


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` (atomically) and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width table (also valid Markdown)."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([line, sep, *body])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def rss_mib() -> float:
    """Resident set size of this process now (MiB); needs psutil, else /proc."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cuda_in_use() -> Any:
    """``torch.cuda`` when torch is imported and a GPU is there, else None (imports nothing)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


def maxrss_mib() -> float:
    """The process's high-water RSS so far (``getrusage`` ru_maxrss, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Phase:
    """Time and memory of one measured phase."""

    name: str
    seconds: float = 0.0
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_end_mib: float = 0.0
    maxrss_mib: float = 0.0  # process high-water mark at the end of the phase
    gpu_peak_mib: float | None = None  # torch.cuda.max_memory_allocated, when CUDA is in use
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_delta_mib(self) -> float:
        return self.rss_peak_mib - self.rss_start_mib


class MemoryMonitor:
    """Samples RSS in a background thread so each phase gets its own peak.

    ``ru_maxrss`` only ever grows, so a phase that peaks below an earlier one would show
    no delta; sampling every ``interval`` seconds gives per-phase peaks (it can miss a
    spike shorter than the interval, so the phase start and end values are included too).
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.phases: list[Phase] = []
        self._peak = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            value = rss_mib()
            with self._lock:
                self._peak = max(self._peak, value)

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Measure the ``with`` body as one phase (phases may not overlap)."""
        start = rss_mib()
        with self._lock:
            self._peak = start
        record = Phase(name, rss_start_mib=start)
        cuda = _cuda_in_use()
        if cuda is not None:
            cuda.synchronize()
            cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            yield record
        finally:
            if cuda is not None:
                cuda.synchronize()
                record.gpu_peak_mib = cuda.max_memory_allocated() / 2**20
            record.seconds = time.perf_counter() - t0
            end = rss_mib()
            with self._lock:
                record.rss_peak_mib = max(self._peak, end)
            record.rss_end_mib = end
            record.maxrss_mib = maxrss_mib()
            self.phases.append(record)
