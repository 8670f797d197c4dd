"""A finished run as a model: small checkpoints, ``mfm embed`` of the same and other cities."""

import json
import shutil

import numpy as np
import pytest

import mfm as mfm_api
from mfm.cities.synth import generate_city
from mfm.core.config import make_config
from mfm.core.embed import read_embeddings
from mfm.core.pipeline import run
from mfm.core.weights import MODEL_FILE
from mfm.eval import evaluate
from tests.test_cli import assert_one_line_error, mfm


@pytest.fixture(scope="module")
def tiny_run(tiny_city, tmp_path_factory):
    """A finished run on the tiny city, every modality, one epoch per stage."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(make_config(city=tiny_city, out=out, epochs=1, quiet=True))
    return out


def _table(path):
    return read_embeddings(path)[1]


def test_run_ships_a_small_model_and_no_training_checkpoints(tiny_run):
    assert (tiny_run / MODEL_FILE).stat().st_size < 10e6
    assert not (tiny_run / "checkpoints").exists()  # only --resume needs them
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["outputs"]["model"] == MODEL_FILE
    assert manifest["backbones"]["osm"]["sha256"]
    assert manifest["backbones"]["sat"]["model"] == "resnet18"


def test_embed_of_the_training_city_reproduces_the_run(tiny_run, tiny_city, tmp_path):
    model = mfm_api.load(tiny_run)
    assert "global" in model.objectives
    result = model.embed(tiny_city, tmp_path / "again", quiet=True)
    for name in ("poi_embeddings.parquet", "region_embeddings.parquet"):
        np.testing.assert_allclose(
            _table(tmp_path / "again" / name), _table(tiny_run / name), atol=1e-5
        )
    assert result.region is not None
    manifest = json.loads(result.manifest.read_text())
    assert manifest["embedded_with"]["run"] == str(tiny_run.resolve())


def test_resume_of_a_finished_run_loads_its_model(tiny_run, tmp_path):
    copy = shutil.copytree(tiny_run, tmp_path / "copy")
    before = _table(copy / "region_embeddings.parquet")
    r = mfm("run", "--out", copy, "--resume", "--quiet", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(_table(copy / "region_embeddings.parquet"), before, atol=1e-6)


def test_embed_a_second_city_writes_what_eval_scores(tiny_run, tmp_path):
    other = generate_city(tmp_path / "seed1", size="tiny", seed=1)
    r = mfm("embed", tiny_run, "--city", other, "--out", tmp_path / "emb", "--quiet")
    assert r.returncode == 0, r.stderr
    result = evaluate(tmp_path / "emb", "population", runs=2)
    assert {"mfm", "raw", "untrained", "counts"} <= set(result["results"])
    assert not np.allclose(
        _table(tmp_path / "emb" / "region_embeddings.parquet")[:5],
        _table(tiny_run / "region_embeddings.parquet")[:5],
    )


def test_embed_refuses_a_city_without_a_needed_layer(tiny_run, bundle, tmp_path):
    toml = bundle / "city.toml"
    toml.write_text(toml.read_text().replace('satellite = "satellite.parquet"\n', ""))
    out = tmp_path / "emb"
    r = mfm("embed", tiny_run, "--city", bundle, "--out", out)
    assert_one_line_error(r, "'satellite'", "--plugins osm,polygon,road,svi,trajectory ")
    assert not out.exists()


def test_embed_refuses_a_changed_backbone(tiny_run, tiny_city, tmp_path):
    copy = shutil.copytree(tiny_run, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["backbones"]["sat"]["sha256"] = "0" * 16
    (copy / "manifest.json").write_text(json.dumps(manifest))
    r = mfm("embed", copy, "--city", tiny_city, "--out", tmp_path / "emb")
    assert_one_line_error(r, "sat backbone differs")
    assert not (tmp_path / "emb").exists()


def test_embed_needs_a_finished_run(tmp_path, tiny_city):
    r = mfm("embed", tmp_path, "--city", tiny_city, "--out", tmp_path / "emb")
    assert_one_line_error(r, "not a finished run")
