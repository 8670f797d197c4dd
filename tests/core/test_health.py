"""Per-objective health: every objective's loss on a fixed batch after every stage."""

import json
import math

import pytest


@pytest.fixture(scope="module")
def manifest(tiny_city, cache_dir, tmp_path_factory):
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    out = tmp_path_factory.mktemp("health") / "run"
    config = make_config(
        city=tiny_city,
        out=out,
        plugins="osm,svi,sat",
        epochs=1,
        dim=32,
        quiet=True,
        cache_dir=cache_dir,
    )
    run(config)
    return json.loads((out / "manifest.json").read_text())


def test_every_stage_records_every_objective(manifest):
    stages = manifest["stages"]
    ran = [s["name"] for s in stages]
    assert len(ran) >= 3
    for stage in stages:
        assert set(stage["health"]) == set(ran)
        for name, h in stage["health"].items():
            assert math.isfinite(h["loss"]) and h["loss"] > 0
            per_anchor = 4 * h["batch"] - 1 if name == "svi" else h["batch"]  # 4 directions
            assert h["chance"] == pytest.approx(math.log(per_anchor), abs=1e-3)


def test_health_batch_is_fixed(manifest):
    """An objective's value changes between two stages only if they trained its modules:
    the stage of an objective that shares nothing with a later one keeps its value."""
    stages = manifest["stages"]
    first, later = stages[0]["name"], stages[1:]
    before = stages[0]["health"][first]["loss"]
    # the first stage's batch and seed are the same after every stage: same batch size
    assert all(s["health"][first]["batch"] == stages[0]["health"][first]["batch"] for s in later)
    assert before < stages[0]["health"][first]["chance"]  # it learned something on its batch
