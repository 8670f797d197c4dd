"""Cities with few layers still train every scale they can: the run plan says how."""

import json
import re
import shutil

import geopandas as gpd
import numpy as np

from mfm.core.config import make_config
from mfm.core.pipeline import run


def _pois_and_regions_only(tiny_city, root):
    """The tiny city without roads, images, satellite or trajectories (nor footprints)."""
    shutil.copytree(tiny_city, root, ignore=shutil.ignore_patterns("images"))
    toml = (root / "city.toml").read_text()
    toml = re.sub(r"\n(roads|svi|satellite|trajectories) = .*", "", toml)
    (root / "city.toml").write_text(toml)
    pois = gpd.read_parquet(root / "pois.parquet")
    pois.drop(columns=[c for c in pois.columns if c == "footprint"]).to_parquet(
        root / "pois.parquet"
    )
    return root


def test_a_poi_only_bundle_without_roads_runs_poi_local_and_global(tiny_city, tmp_path):
    city = _pois_and_regions_only(tiny_city, tmp_path / "city")
    config = make_config(city=city, out=tmp_path / "run", epochs=2, quiet=True)
    result = run(config)
    manifest = json.loads(result.manifest.read_text())
    plan = {e["objective"]: e for e in manifest["plan"]}
    for name in ("poi", "local", "global"):
        assert plan[name]["skipped"] is None, plan[name]
    assert "grid cells" in plan["poi"]["note"]
    assert plan["local"]["note"].startswith("text/text")
    assert plan["global"]["note"].startswith("micro/micro")
    assert [s["name"] for s in manifest["stages"]] == ["poi", "local", "global"]
    region = result.region
    assert region is not None and np.isfinite(region).all()
    assert region.shape[1] == 3 * config.dim + 3  # [E_G(micro graph), mean POI, amount, size]
