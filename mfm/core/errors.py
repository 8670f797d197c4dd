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
