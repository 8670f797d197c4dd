"""Render an HTML report to a PNG with headless Chromium.

Usage::

    python scripts/screenshot_report.py runs/demo/report/index.html report.png

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``) or ``$CHROMIUM``.
The page is loaded from a ``file://`` URL with networking features off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WINDOW = "1400,2400"
TIMEOUT_S = 120
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """``$CHROMIUM``, ``/usr/bin/chromium`` or the first chromium on PATH (None if none)."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path | str, png: Path | str, window: str = WINDOW) -> Path:
    """Render ``html`` to ``png`` (window ``width,height`` in CSS pixels).

    Raises:
        FileNotFoundError: No HTML file or no Chromium.
        RuntimeError: Chromium failed or wrote no PNG.
    """
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"{html} not found; pass the report's index.html")
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found; apt-get install -y chromium")
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp_png = png.with_name(f".{png.name}.tmp-{os.getpid()}.png")
    with tempfile.TemporaryDirectory(prefix="mfm-chromium-") as profile:
        cmd = [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window}",
            f"--screenshot={tmp_png}",
            html.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if not tmp_png.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {tail}")
    os.replace(tmp_png, png)
    return png


def main(argv: list[str] | None = None) -> int:
    """``screenshot_report.py REPORT_HTML OUT_PNG``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: screenshot_report.py REPORT_HTML OUT_PNG", file=sys.stderr)
        return 2
    try:
        out = screenshot(args[0], args[1])
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
