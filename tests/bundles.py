"""Checks shared by the bundle-writing tests: a failed import must leave nothing behind."""

from __future__ import annotations

from pathlib import Path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of a bundle by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_untouched(root: Path, before: dict[str, bytes]) -> None:
    """The bundle is byte-identical to ``before`` and no staging directory is left."""
    assert snapshot(root) == before
    assert not [p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.")]
