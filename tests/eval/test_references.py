"""The baselines that isolate learning: ``raw`` inputs, ``untrained`` model, wide ``counts``."""

import json
import shutil

import geopandas as gpd
import numpy as np
import pytest

from mfm.core.bundle.city import City
from mfm.core.export import BASELINE_FILE
from mfm.eval import evaluate
from mfm.eval.baselines import counts_features, poi_text_features


def _run(city, out, epochs):
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    return run(make_config(city=city, out=out, plugins="osm", epochs=epochs, dim=32, quiet=True))


@pytest.fixture(scope="module")
def run_dir(tiny_city, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    _run(tiny_city, out, epochs=1)
    return out


def _arrays(run_dir):
    with np.load(run_dir / BASELINE_FILE) as data:
        return {k: data[k] for k in data.files}


def test_raw_is_the_standardized_frozen_text(run_dir, tiny_city):
    city = City.load(tiny_city)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    from mfm.core.cache import FeatureCache

    cache = FeatureCache(manifest["feature_cache"]["dir"])
    text = poi_text_features(city, manifest["modalities"]["osm"], cache).astype(np.float64)
    std = text.std(axis=0)
    expected = (text - text.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)
    ref = _arrays(run_dir)
    np.testing.assert_allclose(ref["raw_poi"], expected, atol=1e-4)
    region = city.poi_region()
    r = region[0]
    mean = ref["raw_poi"][region == r].mean(axis=0)
    d = mean.shape[0]
    np.testing.assert_allclose(ref["raw_region"][r, :d], mean / np.linalg.norm(mean), atol=1e-5)


def test_untrained_does_not_depend_on_training(run_dir, tiny_city, tmp_path):
    """Same seed, no step: a run with other epochs writes the same untrained embeddings."""
    other = _run(tiny_city, tmp_path / "run2", epochs=2)
    a, b = _arrays(run_dir), _arrays(other.out)
    np.testing.assert_array_equal(a["untrained_poi"], b["untrained_poi"])
    np.testing.assert_array_equal(a["untrained_region"], b["untrained_region"])
    assert not np.allclose(a["untrained_poi"], other.poi)  # training moved the embeddings


def test_eval_probes_the_reference_rows(run_dir, tiny_city, tmp_path):
    """Hand-made references: raw holds the label itself (R2 ~ 1), untrained is constant."""
    run = copy_run(run_dir, tmp_path)
    city = City.load(tiny_city)
    labels = city.read_labels("population")
    ids = city.regions["region_id"].astype(str)
    target = labels.set_index("id")["value"].reindex(ids).fillna(0).to_numpy()
    raw = np.column_stack([target, np.zeros_like(target)]).astype(np.float32)
    np.savez(run / BASELINE_FILE, raw_region=raw, untrained_region=np.ones_like(raw))
    r = evaluate(run, "population", runs=3)["results"]
    assert r["raw"]["r2"][0] > 0.99
    assert r["untrained"]["r2"][0] <= 0.0
    assert r["raw"]["r2"][0] > r["mfm"]["r2"][0]


def test_missing_reference_is_reported(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    (run / BASELINE_FILE).unlink()
    r = evaluate(run, "population", runs=2)
    assert "raw" not in r["results"] and "raw" in r["missing"]


def copy_run(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "copy")


def test_counts_use_any_tag_key(bundle):
    pois = gpd.read_parquet(bundle / "pois.parquet")
    kinds = np.array(["restaurant", "school", "bank"])
    pois["tags"] = [
        json.dumps({"fclass": str(kinds[i % 3]), "name": f"poi {i}"}) for i in range(len(pois))
    ]
    pois.to_parquet(bundle / "pois.parquet")
    city = City.load(bundle)
    poi = counts_features(city, "poi")
    assert poi.shape == (len(pois), 3)  # the name is an identifier, not a category
    assert (poi.sum(axis=1) == 1).all()
    region = counts_features(city, "region")
    assert region.shape == (len(city.regions), 3 + 3)  # + log count, log density, log area
    assert np.abs(region[:, :3]).sum() > 0
