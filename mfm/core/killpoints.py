"""Named points where tests kill the process hard, as a crash or ``kill -9`` would.

``MFM_KILL_AT=<point>:<n>`` sends SIGKILL the n-th time the run reaches ``<point>``
(``step``, ``epoch``, ``checkpoint``, ``baselines``, ``export``, ``manifest``); the
resume tests pick such points at random and check that ``--resume`` ends where an
uninterrupted run ends. Unset, a kill point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_AT_ENV = "MFM_KILL_AT"
POINTS = ("step", "epoch", "checkpoint", "baselines", "export", "manifest")
_reached: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """Die with SIGKILL if ``MFM_KILL_AT`` names this point and its count is reached."""
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
