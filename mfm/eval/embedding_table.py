"""Embedding tables from outside a run: read any table of ids and vectors for scoring.

``mfm eval --embeddings FILE`` reads GeoParquet/Parquet/CSV (an id column and a list
column or numeric columns) or ``.npy`` plus an ids file into an :class:`EmbeddingTable`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfm.core.bundle.city import City
from mfm.core.constants import (
    EMBEDDING,
    GEOMETRY,
    LEVEL_ID,
    LEVEL_LAYER,
    POI_ID,
    REGION_ID,
    RUN_MANIFEST,
)
from mfm.core.errors import MfmError
from mfm.core.export import BASELINE_FILE

LEVELS = LEVEL_ID
_LAYER = LEVEL_LAYER

NON_FEATURES: tuple[str, ...] = (GEOMETRY, "n_pois", "cluster")
"""Columns of an embedding table that are never features, besides its id column, the
GeoParquet geometry columns and ``pc1``, ``pc2`` ... (:data:`PC_COLUMN`): mfm's region
file carries ``n_pois`` (POIs per region), and maps add principal components and a
``cluster`` label."""
PC_COLUMN = re.compile(r"pc\d+", re.IGNORECASE)
"""Names of principal-component columns (``pc1``, ``PC2`` ...), never features."""
TABLE_SUFFIXES = (".parquet", ".geoparquet", ".pq", ".csv")
"""Suffixes of embedding tables with their own id column (``.npy`` takes ``ids``)."""

EmbeddingSource = Path | str | pd.DataFrame | tuple[Any, np.ndarray]
"""What ``evaluate_embeddings`` scores: a file, a DataFrame, or ``(ids, array [N, d])``."""


@dataclass(frozen=True)
class EmbeddingTable:
    """An embedding table read for scoring (see :func:`read_embedding_table`)."""

    ids: np.ndarray
    """``[N]`` ids (str), unique."""
    features: np.ndarray
    """``[N, d]`` finite float64 features, row ``i`` of ``ids[i]``."""
    source: str
    """What it was read from, for messages: the file, or ``the DataFrame``."""
    id_column: str | None = None
    """The id column (``region_id``, ``poi_id`` or a custom name); None: plain ids."""
    run_dir: Path | None = None
    """The run directory the file sits in (``manifest.json`` and ``baselines.npz`` next
    to it): its references and text options are used, as ``mfm eval RUN_DIR`` does."""

    def level(self, city: City) -> str:
        """``region`` or ``poi``: from the id column's name, else the layer whose ids match
        the most; MfmError when none of the ids are ids of ``city``."""
        named = {col: lvl for lvl, col in LEVELS.items()}.get(self.id_column or "")
        levels = [named] if named else [lvl for lvl in LEVELS if city.has(_LAYER[lvl])]
        hits = {lvl: int(np.isin(self.ids, city_ids(city, lvl)).sum()) for lvl in levels}
        best = max(hits, key=lambda lvl: hits[lvl]) if hits else None
        if best is None or hits[best] == 0:
            cols = LEVELS[named] if named else f"{REGION_ID} or {POI_ID}"
            raise MfmError(
                f"none of the {len(self.ids)} ids of {self.source} (first: {str(self.ids[0])!r}) "
                f"are {cols} values of city {city.name!r} ({city.root}); score embeddings "
                "of that city, or pass the bundle they belong to with --city"
            )
        return best

    def tasks(self, city: City) -> list[str]:
        """The labelled tasks of ``city`` at this table's level."""
        level = self.level(city)
        return [name for name, spec in city.labels.items() if spec.level == level]


def city_ids(city: City, level: str) -> np.ndarray:
    """The ids (str) of ``city``'s layer at ``level``."""
    return city.layer(_LAYER[level])[LEVELS[level]].astype(str).to_numpy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pick_id_column(
    columns: Sequence[Any], source: str, given: str | None, single: bool = False
) -> str:
    """``given``, else ``region_id`` or ``poi_id`` (exactly one of them), else the only
    column when ``single``."""
    names = [str(c) for c in columns]
    if given is None and single and len(names) == 1:
        return names[0]
    if given is not None:
        if given not in names:
            raise MfmError(
                f"{source} has no column {given!r} (--id-column); its columns: {', '.join(names)}"
            )
        return given
    found = [c for c in (REGION_ID, POI_ID) if c in names]
    if len(found) == 1:
        return found[0]
    what = "both region_id and poi_id" if found else "no region_id or poi_id column"
    raise MfmError(f"{source} has {what}; pass --id-column NAME (its columns: {', '.join(names)})")


def _geo_columns(path: Path) -> set[str]:
    """The geometry columns a GeoParquet file declares (``geo`` metadata)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    try:
        return set(json.loads(meta.get(b"geo", b"{}")).get("columns", {}))
    except (ValueError, AttributeError):
        return set()


def _read_table_file(
    path: Path, id_column: str | None, single: bool = False
) -> tuple[pd.DataFrame, set[str]]:
    """(frame, geometry columns) of a Parquet or CSV file; CSV ids are read as text."""
    try:
        if path.suffix.lower() == ".csv":
            header = pd.read_csv(path, nrows=0).columns
            id_col = _pick_id_column(header, str(path), id_column, single)
            return pd.read_csv(path, dtype={id_col: str}), set()
        return pd.read_parquet(path), _geo_columns(path)
    except MfmError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
        fmt = "CSV with a header row" if path.suffix.lower() == ".csv" else "Parquet file"
        raise MfmError(f"cannot read {path} ({_first_line(exc)}); write a {fmt}") from None


def _is_list_column(values: pd.Series) -> bool:
    if values.dtype != object:
        return False
    present = values.dropna()
    return len(present) > 0 and isinstance(present.iloc[0], list | tuple | np.ndarray)


def _stack(values: pd.Series, source: str, column: str, ids: np.ndarray) -> np.ndarray:
    """A list column as ``[N, d]`` float64; MfmError on empty, ragged or non-numbers."""
    empty = values.isna().to_numpy()
    if empty.any():
        raise MfmError(
            f"{source}: column {column!r} is empty in {int(empty.sum())} rows (first: id "
            f"{str(ids[np.flatnonzero(empty)[0]])!r}); every row needs a vector"
        )
    widths = np.array([len(v) for v in values])
    if len(widths) and (widths != widths[0]).any():
        bad = int(np.flatnonzero(widths != widths[0])[0])
        raise MfmError(
            f"{source}: column {column!r} holds vectors of {widths[0]} and {widths[bad]} "
            f"numbers (id {str(ids[bad])!r}); every row needs a vector of the same width"
        )
    try:
        return np.stack([np.asarray(v, dtype=np.float64) for v in values])
    except (TypeError, ValueError) as exc:
        raise MfmError(
            f"{source}: column {column!r} is not a list of numbers ({_first_line(exc)})"
        ) from None


def _frame_table(
    df: pd.DataFrame,
    source: str,
    id_column: str | None,
    column: str | None,
    geo: set[str],
) -> tuple[np.ndarray, np.ndarray, str]:
    """(ids, features, id column) of a table: the ``column`` / ``embedding`` / only list
    column if there is one, else every numeric column but the :data:`NON_FEATURES`."""
    id_col = _pick_id_column(df.columns, source, id_column)
    missing_id = df[id_col].isna().to_numpy()
    if missing_id.any():
        raise MfmError(
            f"{source} row {int(np.flatnonzero(missing_id)[0])}: no {id_col}; every row needs an id"
        )
    ids = df[id_col].astype(str).to_numpy()
    skip = {id_col, *NON_FEATURES, *geo}
    rest = [c for c in df.columns if c not in skip and not PC_COLUMN.fullmatch(str(c))]
    lists = [c for c in rest if _is_list_column(df[c])]
    if column is not None:
        if column not in lists:
            what = "is not a list column" if column in df.columns else "is not a column"
            have = ", ".join(map(str, lists)) or "none"
            raise MfmError(f"{source}: {column!r} {what} (--column); its list columns: {have}")
        chosen: str | None = column
    elif EMBEDDING in lists:
        chosen = EMBEDDING
    elif len(lists) > 1:
        raise MfmError(
            f"{source} has several list columns ({', '.join(map(str, lists))}); pass "
            "--column NAME to pick the embedding"
        )
    else:
        chosen = lists[0] if lists else None
    if chosen is not None:
        return ids, _stack(df[chosen], source, str(chosen), ids), id_col
    numeric = [c for c in rest if pd.api.types.is_numeric_dtype(df[c])]
    other = [c for c in rest if c not in numeric]
    if other:
        raise MfmError(
            f"{source}: column {other[0]!r} is not numeric; drop it (the features are every "
            f"numeric column but {id_col}, {', '.join(NON_FEATURES)} and pc1, pc2 ...)"
        )
    if not numeric:
        raise MfmError(
            f"{source} has no feature columns besides {id_col}; add numeric columns or a "
            f"list column named {EMBEDDING}"
        )
    return ids, df[numeric].to_numpy(dtype=np.float64), id_col


def _read_ids(path: Path, id_column: str | None) -> tuple[np.ndarray, str | None]:
    """Ids of a ``.npy``: a text file with one per line (an optional ``region_id`` or
    ``poi_id`` header), or a CSV / Parquet with an id column (or a single column)."""
    if not path.is_file():
        raise MfmError(f"ids file {path} not found; pass --ids FILE with one id per row")
    if path.suffix.lower() in TABLE_SUFFIXES:
        df, _ = _read_table_file(path, id_column, single=True)
        col = _pick_id_column(df.columns, str(path), id_column, single=True)
        if df[col].isna().any():
            raise MfmError(f"{path}: column {col!r} has empty ids; every row needs an id")
        return df[col].astype(str).to_numpy(), col
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise MfmError(
            f"cannot read ids file {path} ({_first_line(exc)}); write one id per line"
        ) from None
    lines = [ln for ln in lines if ln]
    header = lines[0] if lines and lines[0] in (REGION_ID, POI_ID, id_column) else None
    return np.array(lines[1:] if header else lines, dtype=str), header


def _read_npy(path: Path, ids: Path | str | None, id_column: str | None) -> EmbeddingTable:
    if ids is None:
        raise MfmError(
            f"{path} holds no ids; pass --ids FILE (one id per line, or a CSV/Parquet with "
            "an id column) in the order of its rows"
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MfmError(
            f"cannot read {path} as .npy ({_first_line(exc)}); save a [N, d] array with numpy.save"
        ) from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise MfmError(
            f"{path} holds a {arr.dtype} array of shape {arr.shape}; save a [N, d] numeric "
            "array (one row per id)"
        )
    id_values, id_col = _read_ids(Path(ids), id_column)
    if len(id_values) != len(arr):
        raise MfmError(
            f"{ids} has {len(id_values)} ids for the {len(arr)} rows of {path}; give one id "
            "per row, in the same order"
        )
    return _table(id_values, arr, str(path), id_col, _run_next_to(path))


def _run_next_to(path: Path) -> Path | None:
    """The run directory ``path`` sits in (``manifest.json`` and ``baselines.npz``)."""
    parent = path.parent
    if (parent / RUN_MANIFEST).is_file() and (parent / BASELINE_FILE).is_file():
        return parent
    return None


def _table(
    ids: Any, features: Any, source: str, id_column: str | None, run_dir: Path | None
) -> EmbeddingTable:
    """Check and wrap: unique ids, one per row, finite numbers."""
    ids = np.asarray(ids).astype(str)
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MfmError(f"{source}: features are not numbers ({_first_line(exc)})") from None
    if x.ndim != 2 or ids.ndim != 1 or len(ids) != len(x):
        raise MfmError(
            f"{source}: {ids.shape} ids for features of shape {x.shape}; give one id per row "
            "of a [N, d] array"
        )
    if len(x) == 0 or x.shape[1] == 0:
        raise MfmError(f"{source} has no embeddings ({x.shape}); write one row per id")
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise MfmError(
            f"{source}: id {str(ids[np.flatnonzero(dup)[0]])!r} appears more than once; ids must "
            "be unique"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise MfmError(
            f"{source}: {int(bad.sum())} of {len(x)} rows have NaN or infinite features (first: id "
            f"{str(ids[np.flatnonzero(bad)[0]])!r}); fill or drop them"
        )
    return EmbeddingTable(ids, x, source, id_column, run_dir)


def read_embedding_table(
    source: EmbeddingSource,
    *,
    ids: Path | str | None = None,
    id_column: str | None = None,
    column: str | None = None,
) -> EmbeddingTable:
    """Read an embedding table to score.

    Args:
        source: A GeoParquet/Parquet or CSV file with an id column, a ``.npy`` ``[N, d]``
            array (with ``ids``), a DataFrame, or ``(ids, array [N, d])``.
        ids: The ids of a ``.npy``'s rows: a text file with one id per line, or a CSV /
            Parquet with an id column.
        id_column: The id column when it is neither ``region_id`` nor ``poi_id``.
        column: The list column holding the vectors, when there are several.

    Features are the ``column`` list column, else one named ``embedding``, else the only
    list column, else every numeric column except the id and :data:`NON_FEATURES`.

    Raises:
        MfmError: Unreadable file, no id column, empty / duplicate ids, NaN features, a
            non-numeric column, several list columns, ids that do not fit the rows.
    """
    if isinstance(source, tuple):
        if len(source) != 2:
            raise MfmError("pass embeddings as (ids, array [N, d]), a DataFrame or a file")
        return _table(source[0], source[1], "the (ids, array) embeddings", None, None)
    if isinstance(source, pd.DataFrame):
        geo = {GEOMETRY} | ({source.geometry.name} if hasattr(source, "geometry") else set())
        found = _frame_table(source, "the DataFrame", id_column, column, geo)
        return _table(found[0], found[1], "the DataFrame", found[2], None)
    path = Path(source)
    if not path.is_file():
        raise MfmError(
            f"embeddings file {path} not found; pass a .parquet, .csv or .npy (with --ids) file"
        )
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, ids, id_column)
    if suffix not in TABLE_SUFFIXES:
        raise MfmError(
            f"cannot read {path}: unknown format {suffix or '(no suffix)'!r}; use a "
            ".parquet (GeoParquet) or .csv table, or a .npy array with --ids FILE"
        )
    if ids is not None:
        raise MfmError(
            f"--ids is for .npy embeddings; {path} has its own id column (pick it with "
            "--id-column NAME)"
        )
    df, geo = _read_table_file(path, id_column)
    found = _frame_table(df, str(path), id_column, column, geo)
    return _table(found[0], found[1], str(path), found[2], _run_next_to(path))
