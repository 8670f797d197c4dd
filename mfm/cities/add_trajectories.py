"""Import GPS trajectories into a City bundle: the ``trajectories`` layer (DESIGN §5).

Input: a CSV or Parquet table of GPS points with a trajectory id, a time and WGS84
lat/lon columns (names mappable). Checks, all vectorised: the columns exist; lat in
[-90, 90] and lon in [-180, 180], numeric and present; the id present; the time present
and parseable; no two points of a trajectory share a time. Bad rows raise a one-line
:class:`~mfm.core.errors.CityError` (file, row, column, fix), or are dropped and counted
with ``drop_invalid``.

Time: a numeric column (or text that is mostly numbers) is kept as an int64 sequence (e.g.
seconds; fractional numbers are rejected); anything else is parsed as timestamps
(ISO 8601 first, then the format pandas infers, then per value). Timestamps with one
time zone keep it (so the wall-clock time of day the trajectory features use is local);
mixed UTC offsets (e.g. across a DST change) are converted to UTC.

Trajectories left with a single point (after bad rows are dropped) are dropped too, and
counted in the summary (``single_point_trajectories``): with no movement they have no
origin-destination pair and would count as a trip that stays in its region.

The layer is written sorted by ``traj_id`` then ``t``, with only ``traj_id`` (string),
``t`` and ``geometry`` (Point, EPSG:4326); an existing trajectories layer is replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from mfm.cities._input import (
    RowChecks,
    check_lonlat,
    check_near_city,
    read_table,
    require_columns,
    table_columns,
)
from mfm.cities.bundle import edit_bundle
from mfm.core.bundle.rules import TIME
from mfm.core.constants import GEOMETRY, TRAJ_ID, WGS84
from mfm.core.errors import CityError, short_repr

__all__ = ["OPTIONS", "add_trajectories"]

OPTIONS = {
    "traj_id": "--traj-id-column",
    "time": "--time-column",
    "lat": "--lat-column",
    "lon": "--lon-column",
}
"""CLI option that maps each input column, quoted in error messages."""


def _traj_ids(checks: RowChecks, raw: pd.Series, column: str) -> pd.Series:
    """Trajectory ids as strings (whole-number floats as integers); missing ones flagged."""
    null = raw.isna().to_numpy()
    if pd.api.types.is_float_dtype(raw):
        values = raw.fillna(0).to_numpy()
        frac = ~null & (np.mod(values, 1) != 0)
        checks.flag(
            frac,
            column,
            lambda r: f"trajectory id {short_repr(values[r])} is not a whole number or string",
            "bad id",
        )
        text = pd.Series(np.where(frac, 0, values).astype(np.int64)).astype(str)
    else:
        text = raw.astype(str).str.strip()
    empty = null | (text == "").to_numpy()
    checks.flag(empty, column, lambda r: "missing trajectory id", "missing id")
    return text.astype(object).where(~empty, None)


def _parse_timestamps(text: pd.Series) -> tuple[pd.Series, bool]:
    """Parse strings to datetime64 (NaT where unparseable); also whether offsets were mixed.

    ISO 8601 first (fast), then the format pandas infers from the first value, then value
    by value (``format="mixed"``, slow: only when the leftovers parse that way).
    """

    def parse(s: pd.Series, **kw: Any) -> tuple[pd.Series, bool]:
        try:
            return pd.to_datetime(s, errors="coerce", **kw), False
        except (ValueError, TypeError):  # mixed UTC offsets: convert to UTC
            return pd.to_datetime(s, errors="coerce", utc=True, **kw), True

    given = text.notna()
    best, mixed = parse(text, format="ISO8601")
    for kw in ({}, {"format": "mixed"}):
        left = best.isna() & given
        if not left.any():
            break
        if kw and parse(text[left], **kw)[0].isna().all():
            break  # the leftovers are not dates at all
        attempt, utc = parse(text, **kw)
        if attempt.notna().sum() > best.notna().sum():
            best, mixed = attempt, utc
    return best, mixed


def _times(checks: RowChecks, raw: pd.Series, column: str) -> tuple[pd.Series, str]:
    """Check and convert the time column: int64 sequence or datetime64; return its kind."""
    null = raw.isna().to_numpy()
    checks.flag(null, column, lambda r: "missing time; every point needs one", "missing time")
    if pd.api.types.is_bool_dtype(raw):
        raise CityError(
            f"{checks.file} column {column}: times are true/false; pass a timestamp or an "
            f"integer time column ({OPTIONS['time']} NAME)"
        )
    if pd.api.types.is_datetime64_any_dtype(raw):
        return raw, "timestamp"  # a zone, if any, is kept: local wall-clock time
    numeric = raw if pd.api.types.is_numeric_dtype(raw) else None
    if numeric is None:
        num = pd.to_numeric(raw, errors="coerce")
        if num[~null].notna().mean() > 0.5:  # text that is mostly numbers: an int sequence
            numeric = num
    if numeric is not None:
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = ~null & (~np.isfinite(values) | (np.mod(values, 1) != 0))
        checks.flag(
            ~null & np.isnan(values),
            column,
            lambda r: f"time {short_repr(raw.iloc[r])} is not a number (the other times are)",
            "bad time",
        )
        checks.flag(
            bad,
            column,
            lambda r: (
                f"time {short_repr(raw.iloc[r])} is not a whole number; numeric times must "
                "be integers (e.g. seconds), or write timestamps"
            ),
            "bad time",
        )
        ints = np.where(bad | null, 0, np.nan_to_num(values)).astype(np.int64)
        return pd.Series(ints, index=raw.index), "int"
    t, mixed = _parse_timestamps(raw.astype(object).where(~null, None))
    unparsed = t.isna().to_numpy() & ~null
    checks.flag(
        unparsed,
        column,
        lambda r: (
            f"time {short_repr(raw.iloc[r])} is not a timestamp (e.g. 2024-05-01T08:30:00) "
            "nor an integer"
        ),
        "bad time",
    )
    return t, "timestamp (UTC, mixed offsets)" if mixed else "timestamp"


def add_trajectories(
    root: Path | str,
    file: Path | str,
    *,
    traj_id: str = TRAJ_ID,
    time: str = TIME,
    lat: str = "lat",
    lon: str = "lon",
    drop_invalid: bool = False,
) -> dict[str, Any]:
    """Import GPS points (CSV or Parquet) into the bundle at ``root`` as ``trajectories``.

    Args:
        root: The City bundle directory.
        file: CSV or Parquet with one row per GPS point.
        traj_id, time, lat, lon: Column names in ``file``.
        drop_invalid: Drop bad rows (counted in the summary) instead of raising.

    Returns:
        A JSON-serialisable summary: layer, file, source, rows (points), trajectories,
        dropped (and why), single_point_trajectories, time (its kind), replaced.

    Raises:
        CityError: One line naming the input file, row, column and fix.
    """
    root, file = Path(root), Path(file)
    wanted = {
        traj_id: ("trajectory id", OPTIONS["traj_id"]),
        time: ("time", OPTIONS["time"]),
        lat: ("latitude", OPTIONS["lat"]),
        lon: ("longitude", OPTIONS["lon"]),
    }
    require_columns(file, table_columns(file, "trajectories"), wanted)
    frame = read_table(file, wanted, text=[traj_id], what="trajectories")
    if frame.empty:
        raise CityError(f"{file} has no data rows; add one row per GPS point")

    checks = RowChecks(file, len(frame), drop_invalid)
    ids = _traj_ids(checks, frame[traj_id], traj_id)
    t, kind = _times(checks, frame[time], time)
    y, x = check_lonlat(checks, frame, lat, lon)
    keys = pd.DataFrame({TRAJ_ID: ids, TIME: t})
    ok = checks.ok  # duplicates among the good rows only (a dropped row is no first copy)
    dup = np.zeros(len(keys), dtype=bool)
    dup[ok] = keys[ok].duplicated(keep="first").to_numpy()
    if dup.any():
        seen = keys[ok & ~dup].reset_index().set_index([TRAJ_ID, TIME])["index"]
        t_shown = keys[TIME].to_numpy()
        checks.flag(
            dup,
            time,
            lambda r: (
                f"trajectory '{ids[r]}' has two points at time {t_shown[r]} (first at row "
                f"{seen.get((ids[r], keys[TIME].iloc[r]), '?')}); each point needs its own time"
            ),
            "duplicate time",
        )
    keep = checks.ok
    if not keep.any():
        raise CityError(f"no valid rows left in {file} after dropping {checks.dropped} bad rows")
    check_near_city(root, file, y[keep], x[keep], "GPS points")

    points = gpd.GeoDataFrame(
        {
            TRAJ_ID: ids[keep].astype(str).to_numpy(dtype=object),
            TIME: t[keep].reset_index(drop=True),  # a Series keeps a time zone's dtype
        },
        geometry=gpd.points_from_xy(x[keep], y[keep]),
        crs=WGS84,
    )
    sizes = points.groupby(TRAJ_ID, sort=False)[TRAJ_ID].transform("size").to_numpy()
    single = sizes == 1
    points = points[~single]
    if points.empty:
        raise CityError(
            f"every trajectory in {file} has a single point; a trajectory needs two or more "
            f"points with the same {traj_id}"
        )
    points = points.sort_values([TRAJ_ID, TIME], kind="stable").reset_index(drop=True)
    with edit_bundle(root) as staging:
        replaced = "trajectories" in staging.manifest["layers"]
        rel = staging.manifest["layers"].get("trajectories") or "trajectories.parquet"
        staging.add_layer("trajectories", points[[TRAJ_ID, TIME, GEOMETRY]], rel)
    return {
        "layer": "trajectories",
        "file": rel,
        "source": str(file),
        "rows": len(points),
        "trajectories": int(points[TRAJ_ID].nunique()),
        "dropped": checks.dropped,
        "dropped_reasons": dict(checks.reasons),
        "single_point_trajectories": int(single.sum()),
        "time": kind,
        "replaced": replaced,
    }
