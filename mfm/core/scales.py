"""The four scale slots, in training order."""

from __future__ import annotations

from enum import IntEnum

from mfm.core.errors import ConfigError


class Scale(IntEnum):
    """A scale slot. Objectives run stage by stage in this order (paper V-A4)."""

    MICRO = 0
    LOCAL = 1
    MACRO = 2
    GLOBAL = 3

    @property
    def label(self) -> str:
        """Lower-case name, as used on the command line and in JSON."""
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Scale:
        """Parse a scale name (case-insensitive); unknown names are a ConfigError."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            known = ", ".join(s.label for s in cls)
            raise ConfigError(f"unknown scale {name!r}; choose from {known}") from None


SLOT_DESCRIPTIONS: dict[Scale, str] = {
    Scale.MICRO: "single POIs and street-view groups",
    Scale.LOCAL: "a POI and its neighbours within max_dist",
    Scale.MACRO: "single regions",
    Scale.GLOBAL: "a region and its adjacent regions",
}


def parse_scales(text: str | list[str] | None) -> list[Scale]:
    """Parse ``"micro,local"`` (or a list) into sorted scales; None means all four."""
    if text is None:
        return list(Scale)
    names = text.split(",") if isinstance(text, str) else text
    return sorted({Scale.parse(n) for n in names if n.strip()})
