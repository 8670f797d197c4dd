"""CLI start-up: wall time and peak memory of the light commands, against ``import torch``.

    python benchmarks/cli_startup.py [--repeats 5]

Each command runs in a fresh interpreter (as a user types it), best of ``--repeats``,
with the plugin index already written (the first command after an install writes it).
Writes ``benchmarks/results/cli_startup.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result

COMMANDS = {
    "mfm --help": [sys.executable, "-m", "mfm", "--help"],
    "mfm --version": [sys.executable, "-m", "mfm", "--version"],
    "mfm plugins": [sys.executable, "-m", "mfm", "plugins"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
}


PROBE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
"""Runs the command from a fresh parent, so the peak RSS is that one process's."""


def measure(cmd: list[str], repeats: int) -> dict[str, float]:
    """Best wall time (s) and peak RSS (MB) of ``cmd`` over ``repeats`` fresh processes."""
    best, peak = float("inf"), 0.0
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PROBE, *cmd], check=True, capture_output=True)
        seconds, rss_kb = out.stdout.split()
        best, peak = min(best, float(seconds)), max(peak, int(rss_kb) / 1024)
    return {"seconds": round(best, 3), "peak_rss_mb": round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    subprocess.run(COMMANDS["mfm plugins"], check=True, capture_output=True)  # the index
    rows = {}
    for name, cmd in COMMANDS.items():
        rows[name] = measure(cmd, args.repeats)
        print(f"| `{name}` | {rows[name]['seconds']:.2f} | {rows[name]['peak_rss_mb']:.0f} |")
    write_result("cli_startup", {"machine": machine(), "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
