"""Per-objective health: every objective's loss on a fixed batch after every stage."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import mfm.core.trainer as trainer_module
from mfm.core.trainer import Runtime, StageRecord, Trainer, TrainSettings


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
    """Same batch and seed after every stage: a value changes only when the weights do."""
    stages = manifest["stages"]
    first, later = stages[0]["name"], stages[1:]
    before = stages[0]["health"][first]
    assert all(s["health"][first]["batch"] == before["batch"] for s in later)
    assert before["loss"] < before["chance"]  # it learned something on its batch
    # L_svi trains only the image head and scene encoder, nothing L_poi uses: poi unchanged
    assert [s["name"] for s in stages[:2]] == ["poi", "svi"]
    assert stages[1]["health"]["poi"] == before


def test_old_state_without_health_loads():
    old = {"name": "poi", "scale": "micro", "epochs": 1, "steps": 2, "items": 8,
           "losses": [1.0, 0.9], "epoch_losses": [0.95], "seconds": 0.1}  # fmt: skip
    assert StageRecord(**old).health == {}


def test_saved_health_survives_resume(tmp_path):
    """A finished stage's health goes into the checkpoint state and comes back unchanged."""
    model = torch.nn.Linear(2, 2)
    trainer = Trainer(model, _settings(), Runtime(torch.device("cpu")), tmp_path)  # type: ignore[arg-type]
    health = {"poi": {"loss": 1.5, "chance": 2.0794, "batch": 8}}
    trainer.history = [StageRecord("poi", "micro", epochs=1, health=health)]
    trainer._save(1, 0, torch.optim.AdamW(model.parameters()), "poi")
    state = trainer._load_last()
    assert state is not None
    assert [StageRecord(**r).health for r in state["history"]] == [health]


def test_warning_names_the_objective_back_at_chance(monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(trainer_module, "log", lines.append)
    trainer = Trainer(None, _settings(), Runtime(torch.device("cpu")), Path())  # type: ignore[arg-type]
    trainer.history = [
        StageRecord("poi", "micro", health={"poi": _h(0.6)}),  # it learned in its stage
        StageRecord(
            "global", "global", health={"poi": _h(0.96), "sate": _h(0.5), "global": _h(1.0)}
        ),
    ]
    trainer._warn_forgotten()
    assert len(lines) == 1 and "objective poi" in lines[0] and "global" in lines[0]
    trainer.history[-1].health["poi"] = _h(0.94)
    lines.clear()
    trainer._warn_forgotten()
    assert lines == []  # below 95% of chance; the last stage's own objective never warns
    trainer.history[0].health["poi"] = _h(0.99)  # it never left chance: nothing forgotten
    trainer.history[-1].health["poi"] = _h(1.0)
    trainer._warn_forgotten()
    assert lines == []


def test_report_health_table():
    from mfm.eval.report import _health_table
    from mfm.plots import health_curves

    stages = [
        {"name": "poi", "health": {"poi": _h(0.5), "svi": _h(1.0)}},
        {"name": "svi", "health": {"poi": _h(0.97), "svi": _h(0.6)}},
    ]
    table = _health_table(SimpleNamespace(stages=stages))
    assert "after poi" in table and "after svi" in table
    assert table.count('class="warn"') == 2  # svi before its stage, poi after svi
    assert f"{0.97 * CHANCE:.3f} ({CHANCE:.3f})" in table
    old = SimpleNamespace(stages=[{"name": "poi", "scale": "micro"}])
    assert "records no objective health" in _health_table(old)
    assert health_curves(old.stages, Path("unused.png")) is None


def test_report_health_figure(tmp_path):
    from mfm.plots import health_curves

    stages = [{"name": "poi", "health": {"poi": _h(0.5)}}, {"name": "svi", "health": {}}]
    path = health_curves(stages, tmp_path / "health.png")
    assert path is not None and path.stat().st_size > 5_000


CHANCE = math.log(8)


def _h(ratio: float) -> dict[str, float]:
    """A health entry at ``ratio`` of chance for a batch of 8."""
    return {"loss": ratio * CHANCE, "chance": CHANCE, "batch": 8}


def _settings() -> TrainSettings:
    return TrainSettings(epochs=1, batch_size=8, lr=1e-3, warmup=0.1, weight_decay=0.0, seed=0)
