"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class MfmError(Exception):
    """An error caused by the user's input (data, config, options), not by a bug.

    The message is one line that names the file or option and says how to fix it.
    """


class ConfigError(MfmError):
    """A bad run configuration (unknown key, wrong type, bad value)."""


class CityError(MfmError):
    """A City bundle that cannot be read or fails validation."""


class PluginError(MfmError):
    """A plugin that is unknown, fails to import, or registers something twice."""


def oneline(obj: object, limit: int = 200) -> str:
    """``obj`` as text on one line, cut to ``limit`` characters (for error messages)."""
    text = " ".join(str(obj).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: object) -> str:
    """A value for an error message: its repr on one line, at most 40 characters."""
    return oneline(repr(value), 40)
