"""Property test: `mfm city validate` on a randomly broken bundle exits 0 or 2, never with a
traceback, and changes no file; City.load then loads it or raises one CityError line."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import shapely
import shapely.affinity
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mfm.cli import app
from mfm.core.bundle.city import City
from mfm.core.errors import CityError
from tests.bundles import snapshot
from tests.core.citydata import make_bundle

LAYER_FILES = tuple(
    f"{k}.parquet" for k in ("pois", "roads", "regions", "svi", "satellite", "trajectories")
)
OTHER_FILES = (
    "labels/function.csv",
    "labels/population.csv",
    "city.toml",
    "images/svi/s0_east.png",
    "images/sat/r1.png",
)
PARQUET_KINDS = (
    "drop_column",
    "swap_xy",
    "far_row",
    "nulls",
    "nan_coords",
    "duplicate_ids",
    "wrong_type",
    "no_rows",
    "truncate",
    "garbage",
)
RAW_KINDS = ("truncate", "garbage", "empty")
CSV_KINDS = ("drop_column", "nulls", "duplicate_ids", "wrong_type", *RAW_KINDS)
TOML_KINDS = ("crs", *RAW_KINDS)
CRSES = ("EPSG:32635", "EPSG:32633", "EPSG:3067", "EPSG:3857", "EPSG:4326", "EPSG:5070")
GEO_KINDS = ("swap_xy", "far_row", "nan_coords")
WRONG_VALUES = (
    lambda n: pa.array(np.arange(n), pa.int64()),
    lambda n: pa.array(np.full(n, 0.5)),
    lambda n: pa.array(["x"] * n),
    lambda n: pa.array([True] * n),
    lambda n: pa.array([[1, 2]] * n),
    lambda n: pa.array([b"\x00\x01garbage"] * n, pa.binary()),
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny valid bundle every example starts from."""
    return make_bundle(tmp_path_factory.mktemp("fuzz") / "base")


def _raw(path: Path, kind: str, rng: np.random.Generator) -> None:
    data = bytearray(path.read_bytes())
    if kind == "empty" or not data:
        path.write_bytes(b"")
    elif kind == "truncate":
        path.write_bytes(bytes(data[: int(rng.integers(0, len(data)))]))
    else:  # garbage: overwrite a random stretch
        start = int(rng.integers(0, len(data)))
        size = int(rng.integers(1, 64))
        data[start : start + size] = rng.bytes(size)
        path.write_bytes(bytes(data))


def _column(names: list[str], rng: np.random.Generator) -> str:
    return names[int(rng.integers(0, len(names)))]


def _parquet(path: Path, kind: str, rng: np.random.Generator) -> None:
    if kind in GEO_KINDS:
        frame = gpd.read_parquet(path)
        geoms = frame.geometry.to_numpy()
        if kind == "swap_xy":
            frame["geometry"] = shapely.transform(geoms, lambda c: c[:, ::-1])
        elif kind == "far_row":
            row = int(rng.integers(0, len(geoms)))
            geoms = geoms.copy()
            geoms[row] = shapely.affinity.translate(geoms[row], *rng.uniform(-60, 60, 2))
            frame["geometry"] = geoms
        else:
            frame["geometry"] = shapely.transform(
                geoms, lambda c: np.where(rng.random((len(c), 1)) < 0.5, np.nan, c)
            )
        frame.to_parquet(path)
        return
    table = pq.read_table(path)
    n, names = table.num_rows, table.column_names
    if kind == "drop_column":
        table = table.drop_columns([_column(names, rng)])
    elif kind == "no_rows":
        table = table.slice(0, 0)
    elif kind == "duplicate_ids":
        table = pa.concat_tables([table, table.slice(0, 1)])
    else:
        name = _column(names, rng)
        i = names.index(name)
        if kind == "nulls":
            hit = pa.array(rng.random(n) < 0.5)
            col = pc.if_else(hit, pa.nulls(n, table.schema.field(i).type), table[name])
        else:  # wrong_type
            col = WRONG_VALUES[int(rng.integers(0, len(WRONG_VALUES)))](n)
        table = table.set_column(i, name, col)
    pq.write_table(table, path)


def _csv(path: Path, kind: str, rng: np.random.Generator) -> None:
    frame = pd.read_csv(path, dtype=str)
    name = _column(list(frame.columns), rng)
    if kind == "drop_column":
        frame = frame.drop(columns=name)
    elif kind == "nulls":
        frame.loc[rng.random(len(frame)) < 0.5, name] = None
    elif kind == "duplicate_ids":
        frame = pd.concat([frame, frame.head(1)])
    else:  # wrong_type
        frame[name] = "not a number"
    frame.to_csv(path, index=False)


def mutate(root: Path, target: str, kind: str, seed: int) -> None:
    """Break one file of a bundle in place (a file broken beyond reading gets garbage)."""
    path, rng = root / target, np.random.default_rng(seed)
    if kind in RAW_KINDS:
        _raw(path, kind, rng)
        return
    if kind == "crs":
        crs = CRSES[int(rng.integers(0, len(CRSES)))]
        path.write_bytes(f'crs = "{crs}"\n'.encode() + path.read_bytes())
        return
    try:
        (_parquet if path.suffix == ".parquet" else _csv)(path, kind, rng)
    except Exception:  # an earlier mutation left it unreadable
        _raw(path, "garbage", rng)


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, str, int]]:
    """One to three (file, kind, seed) mutations."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(LAYER_FILES + OTHER_FILES))
        if target.endswith(".parquet"):
            kinds = PARQUET_KINDS
        elif target.endswith(".csv"):
            kinds = CSV_KINDS
        else:
            kinds = TOML_KINDS if target == "city.toml" else RAW_KINDS
        if target == "satellite.parquet":
            kinds = tuple(k for k in kinds if k not in GEO_KINDS)
        out.append((target, draw(st.sampled_from(kinds)), draw(st.integers(0, 2**32 - 1))))
    return out


@settings(max_examples=25, deadline=None, database=None)
@given(steps=mutations())
def test_validate_survives_broken_bundles(base: Path, steps: list[tuple[str, str, int]]) -> None:
    pristine = snapshot(base)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(base, Path(tmp) / "city"))
        for target, kind, seed in steps:
            mutate(root, target, kind, seed)
        before = snapshot(root)
        result = CliRunner().invoke(app, ["city", "validate", str(root)])
        assert result.exit_code in (0, 2), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output
        lines = result.output.strip().splitlines()
        if result.exit_code == 2:
            assert lines[-1].endswith(f"problem(s) in {root}") and len(lines) >= 2
        else:
            assert lines == [f"{root}: ok"]
        after = snapshot(root)
        assert after == before  # validation writes nothing
        touched = {t for t, _, _ in steps}
        assert {k: v for k, v in after.items() if k not in touched} == {
            k: v for k, v in pristine.items() if k not in touched
        }
        if result.exit_code == 0:
            City.load(root)
        else:
            with pytest.raises(CityError) as info:
                City.load(root)
            assert "\n" not in str(info.value)
