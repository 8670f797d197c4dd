"""The command line as a user meets it: outputs, and one-line errors with exit code 2."""

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import geopandas as gpd
import pyarrow.parquet as pq

from mfm.cli import main


def mfm(*args):
    """Run the console entry point in-process; returns returncode, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["mfm", *map(str, args)]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unknown_plugin(tiny_city, tmp_path):
    r = mfm("run", "--city", tiny_city, "--out", tmp_path / "r", "--plugins", "nosuch")
    assert_one_line_error(r, "unknown plugin 'nosuch'", "osm")
    assert not (tmp_path / "r" / "poi_embeddings.parquet").exists()


def test_unknown_scale_and_config_typo(tiny_city, tmp_path):
    assert_one_line_error(
        mfm("run", "--city", tiny_city, "--scales", "micro,mezzo"), "unknown scale 'mezzo'"
    )
    cfg = tmp_path / "run.toml"
    cfg.write_text("epohcs = 2\n")
    assert_one_line_error(
        mfm("run", "--city", tiny_city, "--config", cfg), "unknown option 'epohcs'", "epochs"
    )


def test_missing_city(tmp_path):
    assert_one_line_error(mfm("run", "--city", tmp_path / "nowhere"), "nowhere")


def test_validate_missing_column(tiny_city, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_city, bad)
    pois = gpd.read_parquet(bad / "pois.parquet").drop(columns=["tags"])
    pois.to_parquet(bad / "pois.parquet")
    r = mfm("city", "validate", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pois.parquet" in r.stderr and "tags" in r.stderr
    run = mfm("run", "--city", bad, "--out", tmp_path / "r")
    assert_one_line_error(run, "pois.parquet", "tags")
    assert mfm("city", "validate", tiny_city).returncode == 0


def test_run_writes_geoparquet_and_manifest(tiny_city, tmp_path):
    out = tmp_path / "run"
    r = mfm(
        "run",
        "--city",
        tiny_city,
        "--out",
        out,
        "--plugins",
        "osm",
        "--epochs",
        "1",
        "--quiet",
        "--dim",
        "24",
    )
    assert r.returncode == 0, r.stderr
    schema = pq.read_schema(out / "poi_embeddings.parquet")
    assert str(schema.field("embedding").type) == "fixed_size_list<element: float>[24]"
    pois = gpd.read_parquet(out / "poi_embeddings.parquet")
    regions = gpd.read_parquet(out / "region_embeddings.parquet")
    assert pois.crs.to_epsg() == 4326 and pois["poi_id"].is_unique
    assert {"region_id", "geometry", "embedding", "n_pois"} <= set(regions.columns)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "osm" in {p["name"] for p in manifest["plugins"]}
    assert manifest["stages"][0]["name"] == "poi" and manifest["stages"][0]["losses"]
    assert set(manifest["city"]["hashes"]) >= {"pois", "roads"}
    again = mfm("run", "--city", tiny_city, "--out", out, "--plugins", "osm")
    assert_one_line_error(again, "already holds a finished run")
    assert not list(out.glob(".*tmp*"))


def test_unreadable_image_is_one_error_line(tiny_city, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_city, bad)
    first = sorted((bad / "images" / "svi").iterdir())[0]
    first.write_text("not an image")
    r = mfm(
        "run",
        "--city",
        bad,
        "--out",
        tmp_path / "r",
        "--plugins",
        "osm,svi",
        "--quiet",
        "--num-workers",
        "1",
        "--epochs",
        "1",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "does not decode" in last and first.name in last
    assert not (tmp_path / "r" / "poi_embeddings.parquet").exists()


def test_eval_json_schema_on_a_run(tiny_city, tmp_path):
    out = tmp_path / "run"
    args = ["--plugins", "osm", "--epochs", "1", "--quiet", "--dim", "16"]
    assert mfm("run", "--city", tiny_city, "--out", out, *args).returncode == 0
    r = mfm("eval", out, "--task", "population", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert {"task", "level", "kind", "split", "runs", "probe", "results"} <= set(result)
    assert result["runs"] == 10 and set(result["results"]) == {
        "mfm",
        "raw",
        "untrained",
        "counts",
        "text",
        "random",
    }
    for metrics in result["results"].values():
        assert set(metrics) == {"rmse", "mae", "r2"} and all(len(v) == 2 for v in metrics.values())
    assert (out / "eval" / "population.json").exists() and (out / "eval" / "population.md").exists()
    bad = mfm("eval", out, "--task", "nosuch")
    assert bad.returncode == 2 and "population" in bad.stderr


def test_version_is_printed_without_loading_plugins():
    from mfm import __version__

    r = mfm("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mfm {__version__}"


def test_out_under_a_file_is_one_error_line(tiny_city, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    r = mfm("run", "--city", tiny_city, "--out", tmp_path / "file" / "run", "--epochs", "1")
    assert_one_line_error(r, "cannot create --out", "file")


def test_print_config_round_trips(tmp_path):
    from mfm.core.config import make_config

    cfg = tmp_path / "c.toml"
    cfg.write_text('[plugin.svi]\nscene = "none"\n[objective.global]\nswap_prob = 0.3\n')
    r = mfm("run", "--config", cfg, "--epochs", "2", "--scales", "micro,global", "--print-config")
    assert r.returncode == 0, r.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(r.stdout)
    again = make_config(printed)
    assert again == make_config(cfg, epochs=2, scales="micro,global")
    assert 'scales = ["micro", "global"]' in r.stdout and "[objective.global]" in r.stdout


def test_run_help_shows_the_config_defaults():
    r = mfm("run", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.replace("│", " ").split())
    assert "Epochs per stage [default: (10)]" in text and "[default: (0.001)]" in text


def test_training_needs_no_matplotlib_and_figures_say_which_extra():
    import subprocess

    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import mfm.core.pipeline, mfm.cli\n"
        "from mfm.core.errors import MfmError\n"
        "try:\n"
        "    import mfm.plots\n"
        "except MfmError as exc:\n"
        "    print(exc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pip install 'urban-mfm[report]'" in r.stdout
