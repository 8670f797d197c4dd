"""``evaluate_embeddings`` / ``mfm eval --embeddings``: any table, the run's tasks and baselines."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mfm.cli import app
from mfm.core.embed import read_embeddings
from mfm.core.errors import MfmError
from mfm.eval import evaluate, evaluate_embeddings, read_embedding_table

QUICK = {"runs": 2, "baselines": ("counts", "random")}


@pytest.fixture(scope="module")
def run_dir(tiny_city, tmp_path_factory):
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    out = tmp_path_factory.mktemp("eval-emb") / "run"
    run(make_config(city=tiny_city, out=out, plugins="osm", epochs=1, dim=32, quiet=True))
    return out


@pytest.fixture(scope="module")
def regions(run_dir):
    """(ids, [R, 32]) of the run's region embeddings."""
    frame, emb = read_embeddings(run_dir / "region_embeddings.parquet")
    return frame["region_id"].astype(str).to_numpy(), emb


@pytest.fixture(scope="module")
def run_population(run_dir):
    """The run's own eval of population on the quick settings."""
    return evaluate(run_dir, "population", **QUICK)


def same_scores(a: dict, b: dict) -> None:
    """Every metric of every method equal (to float round-off)."""
    assert list(a) == list(b)
    for method in a:
        for metric, pair in a[method].items():
            assert pair == pytest.approx(b[method][metric], rel=1e-9, abs=1e-12), (method, metric)


def cli(*args):
    """The console entry point as a user meets it: (exit code, stdout, stderr lines)."""
    from tests.test_cli import mfm

    r = mfm(*args)
    return r.returncode, r.stdout, [ln for ln in r.stderr.splitlines() if ln.strip()]


# --------------------------------------------------------------------------- a run's own file


def test_run_file_gives_the_runs_numbers(run_dir, tiny_city):
    own = evaluate(run_dir, "population", runs=3)
    assert set(own["results"]) == {"mfm", "raw", "untrained", "counts", "text", "random"}
    path = run_dir / "region_embeddings.parquet"
    assert evaluate_embeddings(path, tiny_city, "population", runs=3) == own
    assert evaluate_embeddings(path, task="population", runs=3) == own  # the run's city


def test_run_poi_file_gives_the_runs_numbers(run_dir, tiny_city):
    own = evaluate(run_dir, "function", runs=2, baselines=("raw", "counts"))
    got = evaluate_embeddings(
        run_dir / "poi_embeddings.parquet",
        tiny_city,
        "function",
        runs=2,
        baselines=("raw", "counts"),
    )
    assert got == own and "raw" in got["results"]


def test_cli_on_a_run_file_matches_mfm_eval_run(run_dir, tiny_city, tmp_path):
    code, out, err = cli("eval", run_dir, "--task", "price", "--runs", "3", "--json")
    assert code == 0, err
    path = run_dir / "region_embeddings.parquet"
    args = ("--city", tiny_city, "--task", "price", "--runs", "3", "--json")
    code, out2, err = cli("eval", "--embeddings", path, *args)
    assert code == 0, err
    assert json.loads(out2) == json.loads(out)
    written = run_dir / "region_embeddings-eval" / "price.json"
    assert json.loads(written.read_text()) == json.loads(out)
    assert (run_dir / "region_embeddings-eval" / "price.md").is_file()
    code, _, err = cli("eval", "--embeddings", path, *args, "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "price.json").read_text()) == json.loads(out)


def test_cli_scores_every_task_at_the_tables_level(run_dir, tiny_city, tmp_path):
    ids, emb = read_embeddings(run_dir / "region_embeddings.parquet")
    csv = tmp_path / "mine.csv"
    pd.DataFrame(emb, index=ids["region_id"]).add_prefix("e").reset_index().to_csv(csv, index=False)
    code, out, err = cli("eval", "--embeddings", csv, "--city", tiny_city, "--runs", "2", "--json")
    assert code == 0, err
    assert [r["task"] for r in json.loads(out)] == ["population", "price"]  # not function (poi)
    assert sorted(p.name for p in (tmp_path / "mine-eval").glob("*.json")) == [
        "population.json",
        "price.json",
    ]


# --------------------------------------------------------------------------- other tables


def test_external_table_reports_raw_and_untrained_missing(regions, tiny_city, run_population):
    got = evaluate_embeddings(regions, tiny_city, "population", runs=2, baselines=("raw", "random"))
    assert list(got["results"]) == ["mfm", "random"]
    assert set(got["missing"]) == {"raw"} and "not sit in a run directory" in got["missing"]["raw"]
    same_scores(
        {m: got["results"][m] for m in ("mfm", "random")},
        {m: run_population["results"][m] for m in ("mfm", "random")},
    )


def test_csv_numeric_columns_skip_non_features(regions, tiny_city, tmp_path, run_population):
    ids, emb = regions
    df = pd.DataFrame(emb.astype(np.float64), columns=[f"d{i}" for i in range(emb.shape[1])])
    df.insert(0, "region_id", ids)
    rng = np.random.default_rng(1)
    df["n_pois"] = rng.integers(0, 50, len(df))
    df["pc1"], df["PC2"], df["cluster"] = rng.standard_normal((3, len(df)))
    df["geometry"] = "POINT (0 0)"
    path = tmp_path / "emb.csv"
    df.to_csv(path, index=False)
    table = read_embedding_table(path)
    assert table.features.shape == emb.shape and table.id_column == "region_id"
    got = evaluate_embeddings(path, tiny_city, "population", **QUICK)
    assert got["level"] == "region" and set(got["missing"]) == set()
    same_scores(got["results"], run_population["results"])


def test_npy_with_ids_text_and_csv(regions, tiny_city, tmp_path, run_population):
    ids, emb = regions
    order = np.random.default_rng(2).permutation(len(ids))  # the row order does not matter
    npy = tmp_path / "emb.npy"
    np.save(npy, emb[order])
    txt = tmp_path / "ids.txt"
    txt.write_text("\n".join(ids[order]) + "\n")
    got = evaluate_embeddings(npy, tiny_city, "population", ids=txt, **QUICK)
    same_scores(got["results"], run_population["results"])
    csv = tmp_path / "ids.csv"
    pd.DataFrame({"zone": ids[order], "note": "x"}).to_csv(csv, index=False)
    got = evaluate_embeddings(npy, tiny_city, "population", ids=csv, id_column="zone", **QUICK)
    same_scores(got["results"], run_population["results"])
    txt.write_text("region_id\n" + "\n".join(ids[order]))  # a header line is allowed
    assert read_embedding_table(npy, ids=txt).id_column == "region_id"


def test_parquet_list_column_custom_id(regions, tiny_city, tmp_path, run_population):
    ids, emb = regions
    noise = np.random.default_rng(3).standard_normal(emb.shape)
    df = pd.DataFrame({"zone": ids, "vec": list(emb), "other": list(noise)})
    path = tmp_path / "custom.parquet"
    df.to_parquet(path)
    with pytest.raises(MfmError, match=r"custom\.parquet has several list columns.*--column"):
        evaluate_embeddings(path, tiny_city, "population", id_column="zone", **QUICK)
    got = evaluate_embeddings(
        path, tiny_city, "population", id_column="zone", column="vec", **QUICK
    )
    assert got["level"] == "region"  # from which ids of the city it holds
    same_scores(got["results"], run_population["results"])
    other = evaluate_embeddings(
        path, tiny_city, "population", id_column="zone", column="other", **QUICK
    )
    assert other["results"]["mfm"] != got["results"]["mfm"]


def test_mfm_file_with_map_columns_uses_embedding(run_dir, tiny_city, tmp_path, run_population):
    frame = gpd.read_parquet(run_dir / "region_embeddings.parquet")
    rng = np.random.default_rng(4)
    frame["pc1"], frame["pc2"], frame["pc3"] = rng.standard_normal((3, len(frame)))
    frame["cluster"] = rng.integers(0, 4, len(frame))
    frame["pca"] = list(rng.standard_normal((len(frame), 3)))
    path = tmp_path / "mapped.parquet"  # not in a run directory
    frame.to_parquet(path)
    got = evaluate_embeddings(path, tiny_city, "population", **QUICK)
    same_scores(got["results"], run_population["results"])
    in_memory = evaluate_embeddings(frame, tiny_city, "population", **QUICK)  # a GeoDataFrame
    same_scores(in_memory["results"], run_population["results"])


def test_poi_table_with_custom_id(run_dir, tiny_city, tmp_path):
    frame, emb = read_embeddings(run_dir / "poi_embeddings.parquet")
    df = pd.DataFrame({"key": frame["poi_id"].astype(str), "embedding": list(emb)})
    got = evaluate_embeddings(df, tiny_city, "function", id_column="key", **QUICK)
    own = evaluate(run_dir, "function", **QUICK)
    assert got["level"] == "poi" and got["results"] == own["results"]


# --------------------------------------------------------------------------- errors


def test_errors_name_the_file_and_the_fix(regions, tiny_city, tmp_path):
    ids, emb = regions

    def fails(source, match, **kw):
        with pytest.raises(MfmError, match=match):
            evaluate_embeddings(source, tiny_city, "population", **QUICK, **kw)

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    fails(garbage, r"cannot read .*garbage\.parquet.*Parquet")
    fails(tmp_path / "absent.csv", r"absent\.csv not found")
    (tmp_path / "emb.feather").write_bytes(b"")
    fails(tmp_path / "emb.feather", r"unknown format '\.feather'")

    no_id = tmp_path / "noid.csv"
    pd.DataFrame(emb).add_prefix("e").assign(name=ids).to_csv(no_id, index=False)
    fails(no_id, r"noid\.csv has no region_id or poi_id column; pass --id-column NAME")
    fails(no_id, r"noid\.csv has no column 'zone' \(--id-column\)", id_column="zone")
    assert read_embedding_table(no_id, id_column="name").id_column == "name"

    strange = tmp_path / "strange.csv"
    pd.DataFrame(emb).add_prefix("e").assign(region_id=[f"x{i}" for i in range(len(ids))]).to_csv(
        strange, index=False
    )
    fails(strange, r"none of the 16 ids of .*strange\.csv \(first: 'x0'\) are region_id values")

    nan = emb.astype(np.float64)
    nan[3, 5] = np.nan
    fails((ids, nan), rf"1 of 16 rows have NaN or infinite features \(first: id '{ids[3]}'\)")

    npy = tmp_path / "e.npy"
    np.save(npy, emb)
    short = tmp_path / "ids.txt"
    short.write_text("\n".join(ids[:-1]))
    fails(npy, r"e\.npy holds no ids; pass --ids FILE")
    fails(npy, r"ids\.txt has 15 ids for the 16 rows of .*e\.npy", ids=short)

    dup = pd.DataFrame({"region_id": [*ids[:-1], ids[0]], "embedding": list(emb)})
    fails(dup, rf"id '{ids[0]}' appears more than once")
    with pytest.raises(MfmError, match=r"task 'function' is poi-level but .* holds region"):
        evaluate_embeddings((ids, emb), tiny_city, "function", **QUICK)


def test_non_numeric_column_is_an_error(regions, tiny_city, tmp_path):
    ids, emb = regions
    path = tmp_path / "text.csv"
    pd.DataFrame(emb).add_prefix("e").assign(region_id=ids, name="park").to_csv(path, index=False)
    with pytest.raises(MfmError, match=r"text\.csv: column 'name' is not numeric; drop it"):
        read_embedding_table(path)


def test_cli_error_is_one_line_with_exit_code_2(tiny_city, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("zone,a\nr1,1\n")
    result = CliRunner().invoke(app, ["eval", "--embeddings", str(bad), "--city", str(tiny_city)])
    assert isinstance(result.exception, MfmError)  # main() turns it into one line and code 2
    assert "bad.csv has no region_id or poi_id column" in str(result.exception)
    code, _, err = cli("eval", "--embeddings", bad, "--city", tiny_city)
    assert code == 2 and len(err) == 1 and "--id-column NAME" in err[0]
    code, _, err = cli("eval", "--city", tiny_city)
    assert code == 2 and len(err) == 1 and "neither" in err[0]
    code, _, err = cli("eval", tmp_path, "--embeddings", bad)
    assert code == 2 and len(err) == 1 and "not both" in err[0]
    good = tmp_path / "good.csv"
    good.write_text("region_id,a\nr1,1\n")
    code, _, err = cli("eval", "--embeddings", good)
    assert code == 2 and len(err) == 1 and "pass --city BUNDLE" in err[0]


def test_run_of_another_city_gives_no_references(run_dir, tiny_city, tmp_path):
    import shutil

    for name in ("manifest.json", "baselines.npz", "region_embeddings.parquet"):
        shutil.copy(run_dir / name, tmp_path / name)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["city"]["hashes"]["regions"] = "0" * 16
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    path = tmp_path / "region_embeddings.parquet"
    got = evaluate_embeddings(path, tiny_city, "population", runs=2, baselines=("raw", "random"))
    assert list(got["results"]) == ["mfm", "random"]
    assert "trained on another city" in got["missing"]["raw"]


def test_text_baseline_of_a_table_uses_the_osm_defaults(regions, tiny_city, run_dir):
    own = evaluate(run_dir, "price", runs=2, baselines=("text",))
    got = evaluate_embeddings(regions, tiny_city, "price", runs=2, baselines=("text",))
    assert got["results"] == own["results"]  # the run used the default osm options
