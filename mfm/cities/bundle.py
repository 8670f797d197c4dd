"""Writing City bundles safely: all-or-nothing creation and edits (DESIGN §5).

Every writer (``mfm city synth``, ``from-osm``, the ``add-*`` imports) stages its work in
a hidden sibling directory, validates the result with :func:`mfm.core.bundle.validate.validate_city`
and only then swaps it into place. A failure at any point, including a bad input row found
half-way, leaves the original bundle (or nothing) behind.

Edits do not copy the bundle: the staging directory hard-links the existing files (copying
only where the filesystem cannot link), and :meth:`Staging.file` unlinks a path before it is
rewritten so the original is never written through a link.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from mfm.core.bundle.validate import read_city_toml, validate_city
from mfm.core.config import toml_value
from mfm.core.constants import CITY_MANIFEST, GEOMETRY, LAYERS
from mfm.core.errors import CityError

__all__ = ["Staging", "edit_bundle", "manifest_text", "new_bundle", "read_manifest"]


class Staging:
    """A bundle being written: its directory and its ``city.toml`` content (a dict).

    Attributes:
        root: The staging directory; write files under it through :meth:`file`.
        manifest: ``name``, ``crs``, ``layers`` and ``labels``; written at commit.
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        manifest.setdefault("layers", {})
        manifest.setdefault("labels", {})

    def file(self, rel: str | Path) -> Path:
        """The staging path for ``rel``, ready to be (re)written: parents made, old link gone."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        return path

    def add_layer(self, layer: str, frame: pd.DataFrame, rel: str | None = None) -> str:
        """Write a layer as (Geo)Parquet (geometry column last) and list it in the manifest."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}")
        rel = rel or f"{layer}.parquet"
        cols = [c for c in frame.columns if c != GEOMETRY] + (
            [GEOMETRY] if GEOMETRY in frame.columns else []
        )
        frame[cols].to_parquet(self.file(rel), index=False)
        self.manifest["layers"][layer] = rel
        return rel

    def add_label(self, name: str, frame: pd.DataFrame, level: str, kind: str) -> str:
        """Write ``labels/<name>.csv`` and declare ``[labels.<name>]``."""
        rel = f"labels/{name}.csv"
        frame.to_csv(self.file(rel), index=False)
        self.manifest["labels"][name] = {"path": rel, "level": level, "kind": kind}
        return rel

    def link(self, src: Path | str, rel: str | Path) -> None:
        """Place an external file at ``rel``: a hard link when possible, else a copy."""
        dst = self.file(rel)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


read_manifest = read_city_toml  # city.toml is parsed in mfm.core.bundle.validate only


def manifest_text(manifest: dict[str, Any]) -> str:
    """``city.toml`` text for a manifest dict (name, crs, [layers], [labels.*])."""
    lines = [f"{k} = {toml_value(manifest[k])}" for k in ("name", "crs") if manifest.get(k)]
    lines += ["", "[layers]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in manifest.get("layers", {}).items()]
    for name, spec in manifest.get("labels", {}).items():
        key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
        lines += ["", f"[labels.{key}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in spec.items()]
    return "\n".join(lines) + "\n"


def _commit(staging: Staging) -> None:
    (staging.root / CITY_MANIFEST).write_text(manifest_text(staging.manifest), encoding="utf-8")
    problems = validate_city(staging.root)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CityError(f"the result would not be a valid bundle: {problems[0]}{more}")


def _staging_dir(target: Path) -> Path:
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


@contextlib.contextmanager
def new_bundle(out: Path | str, name: str, crs: str | None = None) -> Iterator[Staging]:
    """Create a bundle at ``out`` (which must not exist or be empty), all or nothing.

    Yields a :class:`Staging` to fill; on a clean exit the manifest is written, the bundle
    validated, and the directory renamed to ``out``. Any exception removes the staging.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CityError(f"{out} already exists; pass a new --out or delete it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staging_dir(out)
    tmp.mkdir()
    try:
        staging = Staging(tmp, {"name": name, "crs": crs})
        yield staging
        _commit(staging)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror ``src`` into ``dst`` with hard links (copies where links fail)."""
    try:
        shutil.copytree(src, dst, copy_function=os.link)
    except (OSError, shutil.Error):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


@contextlib.contextmanager
def edit_bundle(root: Path | str) -> Iterator[Staging]:
    """Edit an existing bundle all or nothing.

    Yields a :class:`Staging` over a hard-linked mirror of ``root``; on a clean exit the
    result is validated and swapped in, so readers never see a half-edited bundle.
    """
    root = Path(root)
    manifest = read_manifest(root)
    tmp = _staging_dir(root)
    _link_tree(root, tmp)
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    try:
        staging = Staging(tmp, manifest)
        yield staging
        _commit(staging)
        os.replace(root, old)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
