"""add_trajectories: GPS points (CSV/Parquet) into the trajectories layer, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mfm.cities.add_trajectories import add_trajectories
from mfm.core.bundle.city import City
from mfm.core.errors import CityError
from tests.bundles import assert_untouched, snapshot

LON, LAT = 8.54, 47.37  # inside the synthetic city


def _points(n_traj: int = 3, per: int = 4) -> pd.DataFrame:
    """n_traj trajectories of ``per`` points each, rows shuffled, ISO times."""
    k = np.arange(n_traj * per)
    frame = pd.DataFrame(
        {
            "traj_id": np.repeat([f"{i:03d}" for i in range(n_traj)], per),
            "t": pd.Timestamp("2024-05-01 08:00") + pd.to_timedelta(k % per * 30, unit="s"),
            "lat": LAT + 0.0002 * k,
            "lon": LON + 0.0001 * k,
        }
    )
    frame["t"] = frame["t"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_csv_with_mapped_columns_is_sorted_and_single_points_dropped(
    bundle: Path, tmp_path: Path
) -> None:
    frame = _points()
    lone = pd.DataFrame({"traj_id": ["lone"], "t": ["2024-05-01T09:00:00"], "lat": [LAT]})
    frame = pd.concat([frame, lone.assign(lon=LON)], ignore_index=True)
    path = tmp_path / "gps.csv"
    frame.rename(columns={"traj_id": "id", "t": "when", "lat": "y", "lon": "x"}).to_csv(
        path, index=False
    )
    summary = add_trajectories(bundle, path, traj_id="id", time="when", lat="y", lon="x")
    json.dumps(summary)
    assert summary["layer"] == "trajectories" and summary["replaced"] is True
    assert summary["rows"] == 12 and summary["trajectories"] == 3
    assert summary["single_point_trajectories"] == 1 and summary["dropped"] == 0
    assert summary["time"] == "timestamp"

    traj = City.load(bundle).trajectories
    assert list(traj.columns) == ["traj_id", "t", "geometry"]
    assert traj["traj_id"].tolist() == ["000"] * 4 + ["001"] * 4 + ["002"] * 4  # zeros kept
    assert pd.api.types.is_datetime64_any_dtype(traj["t"])
    stored = pd.read_parquet(bundle / "trajectories.parquet")
    assert stored["traj_id"].tolist() == traj["traj_id"].tolist()  # written sorted
    assert (stored.groupby("traj_id")["t"].diff().dropna() > pd.Timedelta(0)).all()
    first = frame[(frame.traj_id == "001")].sort_values("t").iloc[0]
    assert traj.geometry.x[4] == pytest.approx(first.lon)
    assert traj.geometry.y[4] == pytest.approx(first.lat)


def test_parquet_integer_times_and_ids(bundle: Path, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "traj_id": [7, 7, 7, 12, 12],
            "t": [30, 10, 20, 5, 0],
            "lat": LAT + np.arange(5) * 1e-4,
            "lon": [LON] * 5,
        }
    )
    frame.to_parquet(tmp_path / "gps.parquet")
    summary = add_trajectories(bundle, tmp_path / "gps.parquet")
    assert summary["rows"] == 5 and summary["time"] == "int"
    traj = City.load(bundle).trajectories
    assert traj["traj_id"].tolist() == ["12", "12", "7", "7", "7"]
    assert traj["t"].dtype == np.int64 and traj["t"].tolist() == [0, 5, 10, 20, 30]


def test_mixed_utc_offsets_become_utc(bundle: Path, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "traj_id": ["a", "a", "b", "b"],
            "t": [
                "2024-03-30T23:00:00+01:00",
                "2024-03-31T09:00:00+02:00",
                "2024-07-01T08:00:00+02:00",
                "2024-07-01T08:10:00+02:00",
            ],
            "lat": [LAT] * 4,
            "lon": [LON, LON + 1e-3, LON, LON + 1e-3],
        }
    )
    frame.to_csv(tmp_path / "gps.csv", index=False)
    summary = add_trajectories(bundle, tmp_path / "gps.csv")
    assert summary["time"] == "timestamp (UTC, mixed offsets)"
    t = City.load(bundle).trajectories["t"]
    assert str(t.dt.tz) == "UTC" and t.iloc[1] == pd.Timestamp("2024-03-31T07:00:00Z")


def test_bad_lat_unknown_column_and_bad_time_leave_bundle_unchanged(
    bundle: Path, tmp_path: Path
) -> None:
    frame = _points()
    frame.loc[3, "lat"] = 123.0
    path = tmp_path / "gps.csv"
    frame.to_csv(path, index=False)
    before = snapshot(bundle)
    with pytest.raises(CityError) as err:
        add_trajectories(bundle, path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path} row 3 column lat: lat 123 is out of range [-90, 90]")
    assert msg.endswith("fix the row or pass --drop-invalid to skip bad rows")

    with pytest.raises(CityError) as err:
        add_trajectories(bundle, path, lat="latitude", time="timestamp")
    msg = str(err.value)
    assert "no column 'latitude'" in msg and "--lat-column" in msg
    assert "no column 'timestamp'" in msg and "--time-column" in msg
    assert "its columns are: traj_id, t, lat, lon" in msg

    frame.loc[3, "lat"] = LAT
    frame.loc[5, "t"] = "yesterday-ish"
    frame.to_csv(path, index=False)
    with pytest.raises(CityError, match=r"row 5 column t: time 'yesterday-ish' is not a timestamp"):
        add_trajectories(bundle, path)

    far = _points().assign(lat=LAT + 10)
    far.to_csv(tmp_path / "far.csv", index=False)
    with pytest.raises(CityError, match=r"none of the 12 GPS points .* lie near the city"):
        add_trajectories(bundle, tmp_path / "far.csv")
    assert_untouched(bundle, before)


def test_drop_invalid_counts_every_bad_row(bundle: Path, tmp_path: Path) -> None:
    frame = _points(n_traj=3, per=4).astype({"lat": object})
    frame.loc[0, "lat"] = 95.0
    frame.loc[1, "lat"] = None
    frame.loc[2, "traj_id"] = None
    frame.loc[3, "t"] = "not a time"
    dup = frame.iloc[[4]].assign(lat=LAT + 0.1)  # same traj_id and t as row 4
    frame = pd.concat([frame, dup], ignore_index=True)
    path = tmp_path / "gps.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(CityError, match=r"row 2 column traj_id: missing trajectory id"):
        add_trajectories(bundle, path)
    summary = add_trajectories(bundle, path, drop_invalid=True)
    assert summary["dropped"] == 5
    assert summary["dropped_reasons"] == {
        "missing id": 1,
        "bad time": 1,
        "missing lat": 1,
        "lat out of range": 1,
        "duplicate time": 1,
    }
    kept = City.load(bundle).trajectories
    assert len(kept) + summary["single_point_trajectories"] == 12 - 4
    assert not kept.duplicated(["traj_id", "t"]).any()
