"""``evaluate`` on a real tiny run: schema, baselines, tasks, labels files, outputs."""

import json

import numpy as np
import pandas as pd
import pytest

from mfm.core.errors import MfmError
from mfm.eval import evaluate, list_tasks, write_eval

METHODS = ["mfm", "raw", "untrained", "counts", "text", "random"]
TOP = {"task", "level", "kind", "split", "runs", "probe", "results", "n", "dropped"}


@pytest.fixture(scope="module")
def run_dir(tiny_city, tmp_path_factory):
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    out = tmp_path_factory.mktemp("eval") / "run"
    run(make_config(city=tiny_city, out=out, plugins="osm", epochs=1, dim=32, quiet=True))
    return out


@pytest.fixture(scope="module")
def population(run_dir):
    return evaluate(run_dir, "population")


def is_pair(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(isinstance(x, float) for x in v)


def test_regression_schema(population):
    r = population
    assert set(r) >= TOP
    assert (r["task"], r["level"], r["kind"], r["split"], r["runs"], r["probe"]) == (
        "population",
        "region",
        "regression",
        "random",
        10,
        "ridge",
    )
    assert list(r["results"]) == METHODS
    for res in r["results"].values():
        assert set(res) == {"rmse", "mae", "r2"}
        assert all(is_pair(v) and v[1] >= 0 for v in res.values())
    assert r["n"] == 16 and r["dropped"] == 0
    assert r["n_train"] + r["n_test"] == r["n"]
    json.dumps(r, allow_nan=False)  # strict JSON


def test_classification_schema_and_support(run_dir):
    r = evaluate(run_dir, "function", runs=3, baselines=("counts", "random"))
    assert (r["level"], r["kind"], r["runs"]) == ("poi", "classification", 3)
    assert list(r["results"]) == ["mfm", "counts", "random"]
    for res in r["results"].values():
        assert set(res) == {"macro_f1", "weighted_f1", "per_class"}
        assert is_pair(res["macro_f1"]) and is_pair(res["weighted_f1"])
        assert all(
            set(c) == {"f1", "support"} and is_pair(c["f1"]) for c in res["per_class"].values()
        )
        assert sum(c["support"] for c in res["per_class"].values()) == pytest.approx(r["n_test"])
    assert r["n_test"] == 30  # 20% of the 150 POIs, every run


def test_text_baseline_reads_the_runs_cache(run_dir, monkeypatch):
    import mfm.core.encoders as encoders

    def boom(*args, **kwargs):
        raise AssertionError("text re-encoded after a run")

    monkeypatch.setattr(encoders, "encode_texts", boom)
    r = evaluate(run_dir, "price", runs=2, baselines=("text",))
    assert list(r["results"]) == ["mfm", "text"]


def test_spatial_split_runs(run_dir):
    r = evaluate(run_dir, "price", split="spatial", runs=4, baselines=("random",))
    assert r["split"] == "spatial" and r["runs"] == 4
    assert all(is_pair(v) for v in r["results"]["mfm"].values())


def test_unknown_task_lists_the_tasks(run_dir):
    with pytest.raises(MfmError, match="function, population, price"):
        evaluate(run_dir, "crime")
    with pytest.raises(MfmError, match="--task"):
        evaluate(run_dir)
    assert set(list_tasks(run_dir)) == {"function", "population", "price"}


def test_external_labels_file(run_dir, tiny_city, tmp_path):
    regions = pd.read_csv(tiny_city / "labels" / "population.csv")
    extra = pd.DataFrame({"region_id": ["nowhere"], "value": [1.0]})
    path = tmp_path / "density.csv"
    pd.concat([regions.iloc[:12], extra]).to_csv(path, index=False)
    r = evaluate(run_dir, labels=path, runs=2, baselines=("counts",))
    assert (r["task"], r["level"], r["kind"]) == ("density", "region", "regression")
    assert r["n"] == 12 and r["dropped"] == 1
    r = evaluate(
        run_dir, "dens", labels=path, level="region", kind="regression", runs=2, baselines=()
    )
    assert r["task"] == "dens" and list(r["results"]) == ["mfm"]


def test_labels_file_problems_name_the_file(run_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("region_id,score\nr00000,1\n")
    with pytest.raises(MfmError, match=r"bad\.csv.*--kind"):
        evaluate(run_dir, labels=bad, level="region")
    with pytest.raises(MfmError, match=r"bad\.csv: missing column 'value'"):
        evaluate(run_dir, labels=bad, level="region", kind="regression")
    bad.write_text("region_id,value\nr00000,1\nr00001,lots\n")
    with pytest.raises(MfmError, match=r"bad\.csv row 1.*numeric"):
        evaluate(run_dir, labels=bad)
    with pytest.raises(MfmError, match="not found"):
        evaluate(run_dir, labels=tmp_path / "missing.csv", level="region", kind="regression")


def test_write_eval_writes_json_and_markdown(run_dir, population):
    json_path, md_path = write_eval(run_dir, population)
    assert json_path == run_dir / "eval" / "population.json"
    assert md_path == run_dir / "eval" / "population.md"
    assert json.loads(json_path.read_text()) == population
    md = md_path.read_text()
    assert "| RMSE |" in md and "mfm" in md
    assert not list((run_dir / "eval").glob(".*tmp*"))


def test_same_seed_same_result(run_dir, population):
    again = evaluate(run_dir, "population")
    assert again["results"] == population["results"]
    other = evaluate(run_dir, "population", seed=1, baselines=())
    assert not np.allclose(other["results"]["mfm"]["r2"], population["results"]["mfm"]["r2"])
