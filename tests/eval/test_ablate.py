"""``ablate`` on the tiny city: table files, reuse of finished runs, failed variants."""

import csv
import json

import pytest

from mfm.core.bundle.city import City
from mfm.core.config import make_config
from mfm.core.errors import MfmError
from mfm.eval.ablate import ablate, plan_variants

TASK = ["population"]


@pytest.fixture(scope="module")
def ablation(tiny_city, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate") / "abl"
    table = ablate(
        tiny_city,
        out,
        variants="osm;osm,svi",
        epochs=1,
        runs=3,
        tasks=TASK,
        cache_dir=cache_dir,
        dim=32,
        max_steps_per_epoch=1,
    )
    return out, table


def test_writes_table_files(ablation):
    out, table = ablation
    variants = [r["variant"] for r in table["rows"] if r["kind"] == "variant"]
    baselines = [r["variant"] for r in table["rows"] if r["kind"] == "baseline"]
    assert variants == ["osm", "osm+svi"]
    assert baselines == ["raw", "untrained", "counts", "text", "random"]
    for row in table["rows"]:
        assert row["error"] is None
        r2 = row["results"]["population"]["r2"]
        assert isinstance(r2[0], float) and r2[1] >= 0
    for name in ("osm", "osm+svi"):  # each variant is a normal run dir with its eval json
        assert (out / name / "manifest.json").is_file()
        saved = json.loads((out / name / "eval" / "population.json").read_text())
        assert saved["runs"] == 3 and saved["split"] == "random"

    md = (out / "ablation.md").read_text()
    assert "population R2" in md and "population RMSE" in md
    body = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert [ln.split("|")[1].strip() for ln in body] == [
        "osm",
        "osm+svi",
        "raw (baseline)",
        "untrained (baseline)",
        "counts (baseline)",
        "text (baseline)",
        "random (baseline)",
    ]
    assert "(" in body[0].split("|")[4]  # "mean (std)" cells

    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["variant"] for r in rows] == [
        "osm",
        "osm+svi",
        "raw",
        "untrained",
        "counts",
        "text",
        "random",
    ]
    cols = {"population_r2_mean", "population_r2_std", "population_rmse_mean"}
    assert cols <= set(rows[0])
    assert float(rows[0]["population_r2_mean"]) == pytest.approx(
        table["rows"][0]["results"]["population"]["r2"][0], rel=1e-5
    )
    png = out / "ablation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert json.loads((out / "ablation.json").read_text())["rows"][0]["variant"] == "osm"
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_rerun_reuses_runs_and_records_failure(ablation, tiny_city, cache_dir, monkeypatch):
    import mfm.core.pipeline as pipeline

    out, first = ablation
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.json")}
    real_run, calls = pipeline.run, []

    def counting_run(config, resume=False, registry=None):
        calls.append(list(config.plugins or []))
        return real_run(config, resume=resume, registry=registry)

    monkeypatch.setattr(pipeline, "run", counting_run)
    table = ablate(
        tiny_city,
        out,
        variants="osm;osm,svi;nope",
        epochs=1,
        runs=3,
        tasks=TASK,
        cache_dir=cache_dir,
        dim=32,
        max_steps_per_epoch=1,
    )
    assert calls == [["nope"]]  # the finished runs were not trained again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nor re-evaluated
    rows = {r["variant"]: r for r in table["rows"]}
    assert rows["osm"]["results"] == first["rows"][0]["results"]
    assert "unknown plugin 'nope'" in rows["nope"]["error"]
    assert rows["nope"]["results"] == {}
    md = (out / "ablation.md").read_text()
    nope = next(ln for ln in md.splitlines() if ln.startswith("| nope "))
    assert "failed" in nope and "unknown plugin" in nope
    csv_rows = {r["variant"]: r for r in csv.DictReader((out / "ablation.csv").open())}
    assert csv_rows["nope"]["population_r2_mean"] == ""
    assert "unknown plugin" in csv_rows["nope"]["error"]


def test_plan_variants_drop(tiny_city):
    city = City.load(tiny_city)
    config = make_config(city=tiny_city)
    plugins = plan_variants(city, "plugins", None, "osm,svi,sat", config)
    assert [v.name for v in plugins] == ["full", "no-osm", "no-svi", "no-sat"]
    assert plugins[2].plugins == ["osm", "sat"]
    scales = plan_variants(city, "scales", None, ["osm", "svi"], config)
    # only slots that train: GLOBAL runs micro/micro without a macro view
    assert [v.name for v in scales] == ["full", "no-micro", "no-local", "no-global"]
    assert [s.label for s in scales[1].scales] == ["local", "macro", "global"]
    every = plan_variants(city, "plugins", None, None, config)
    assert every[0].plugins and set(every[0].plugins) >= {"osm", "svi"}


@pytest.mark.parametrize(
    ("drop", "variants", "message"),
    [
        (None, None, "nothing to ablate"),
        ("plugins", "osm", "not both"),
        ("modalities", None, "--drop 'modalities'"),
        (None, "osm;osm", "twice"),
    ],
)
def test_plan_variants_errors(tiny_city, drop, variants, message):
    city = City.load(tiny_city)
    with pytest.raises(MfmError, match=message):
        plan_variants(city, drop, variants, None, make_config(city=tiny_city))


def test_unknown_task(tiny_city, tmp_path):
    with pytest.raises(MfmError, match=r"unknown task 'nope'.*population"):
        ablate(tiny_city, tmp_path, variants="osm", tasks="nope")
