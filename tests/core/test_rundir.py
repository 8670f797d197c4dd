"""Runs never mix or clobber: --resume continues only the same run, --out is claimed."""

import json
from pathlib import Path

import pytest

from mfm.core.errors import MfmError
from tests.test_cli import assert_one_line_error, mfm

FAST = ("--plugins", "osm,polygon", "--epochs", "1", "--max-steps", "2", "--quiet")


def test_resume_refuses_another_run_and_finds_its_city(tiny_city, tmp_path):
    out = tmp_path / "run"
    first = mfm("run", "--city", tiny_city, "--out", out, *FAST)
    assert first.returncode == 0, first.stderr
    assert f"next: mfm eval {out} && mfm report {out}" in " ".join(first.stderr.split())
    identity = json.loads((out / "run.json").read_text())
    assert identity["city"] == str(tiny_city.resolve()) and "pois" in identity["layers"]
    other = mfm("run", "--out", out, "--resume", *FAST[2:], "--plugins", "osm")
    assert_one_line_error(other, "--resume", "is another run", "modalities")
    lr = mfm("run", "--city", tiny_city, "--out", out, "--resume", *FAST, "--lr", "0.5")
    assert_one_line_error(lr, "config.lr was 0.001, now 0.5")
    again = mfm("run", "--out", out, "--resume", *FAST)  # no --city: the recorded one
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["city"]["root"] == str(tiny_city.resolve())


def test_a_non_empty_folder_is_refused_unless_overwrite_replaces_a_run(tiny_city, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "poi_embeddings.parquet").write_text("mine")
    r = mfm("run", "--city", tiny_city, "--out", notes, *FAST)
    assert_one_line_error(r, "already holds files", "--overwrite")
    r = mfm("run", "--city", tiny_city, "--out", notes, *FAST, "--overwrite")
    assert_one_line_error(r, "is not an mfm run")
    assert (notes / "poi_embeddings.parquet").read_text() == "mine"
    out = tmp_path / "run"
    assert mfm("run", "--city", tiny_city, "--out", out, *FAST).returncode == 0
    r = mfm("run", "--city", tiny_city, "--out", out, *FAST, "--seed", "3", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 3


def test_a_failing_run_leaves_nothing_behind(tiny_city, tmp_path):
    out = tmp_path / "run"
    bad = mfm("run", "--city", tiny_city, "--out", out, "--plugins", "nosuch")
    assert bad.returncode == 2 and not out.exists()  # refused while planning
    cfg = tmp_path / "c.toml"
    cfg.write_text("[objective.poi]\nmax_road_dist = 0.001\n")  # no road within reach
    r = mfm("run", "--city", tiny_city, "--out", out, "--config", cfg, *FAST)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: L_poi")
    assert not out.exists()  # failed in prepare, before any checkpoint


def test_ctrl_c_prints_the_resume_hint_and_exits_130(tiny_city, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mfm", "run", "--city", str(tiny_city), "--out", str(out)]
    cmd += ["--plugins", "osm,polygon", "--epochs", "20", "--quiet"]
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
        # a shell that starts jobs in the background ignores SIGINT for them: undo that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "last.json").exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"interrupted; continue with: mfm run --out {out} --resume"
    )
    assert "Traceback" not in err


def test_eval_and_report_find_a_moved_city_with_city(tiny_city, tmp_path):
    import shutil

    city = tmp_path / "city"
    shutil.copytree(tiny_city, city)
    out = tmp_path / "run"
    assert mfm("run", "--city", city, "--out", out, *FAST).returncode == 0
    moved = tmp_path / "moved"
    city.rename(moved)
    lost = mfm("eval", out, "--task", "population", "--runs", "2")
    assert_one_line_error(lost, "is not there", "--city")
    found = mfm("eval", out, "--task", "population", "--runs", "2", "--city", moved)
    assert found.returncode == 0, found.stderr
    shutil.copytree(moved, tmp_path / "elsewhere")
    rep = mfm("report", out, "--city", tmp_path / "elsewhere")
    assert rep.returncode == 0, rep.stderr


def test_a_finished_run_is_read_through_its_typed_manifest(tiny_city, tmp_path):
    from mfm.core.config import make_config
    from mfm.core.pipeline import run
    from mfm.core.rundir import RunDir

    out = tmp_path / "run"
    run(make_config(city=tiny_city, out=out, plugins="osm", epochs=1, dim=16, quiet=True))
    rd = RunDir(out)
    assert rd.manifest.city.root == str(Path(tiny_city).resolve())
    assert rd.manifest.outputs.region_dim == rd.manifest.outputs.dim * 3 + 3
    assert rd.embeddings_file("region").name == "region_embeddings.parquet"
    assert rd.city().name == rd.manifest.city.name and rd.config.epochs == 1
    assert rd.text_options["model"] == "all-MiniLM-L6-v2"
    broken = json.loads((out / "manifest.json").read_text())
    del broken["outputs"]
    (out / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(MfmError, match=r"is not a run manifest \(outputs: Field required\)"):
        RunDir(out)
