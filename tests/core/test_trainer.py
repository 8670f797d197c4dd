"""Resume after a hard kill, distributed training, atomic outputs."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from mfm.core.config import make_config
from mfm.core.embed import read_embeddings
from mfm.core.pipeline import run
from mfm.core.trainer import Runtime, Trainer, TrainSettings

RUN = [
    sys.executable,
    "-m",
    "mfm",
    "run",
    "--plugins",
    "osm",
    "--epochs",
    "4",
    "--quiet",
    "--batch-size",
    "8",
    "--dim",
    "32",
]


def _run(args, env=None, check=True):
    return subprocess.run(RUN + args, capture_output=True, text=True, env=env, check=check)


def test_resume_after_kill_matches_uninterrupted_run(tiny_city, tmp_path):
    full, broken = tmp_path / "full", tmp_path / "broken"
    _run(["--city", str(tiny_city), "--out", str(full)])
    env = os.environ | {"MFM_KILL_AT": "epoch:3"}  # killed in the second half
    killed = _run(["--city", str(tiny_city), "--out", str(broken)], env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert not (broken / "poi_embeddings.parquet").exists()
    state = json.loads((broken / "checkpoints" / "last.json").read_text())
    assert state["epoch"] == 3
    _run(["--city", str(tiny_city), "--out", str(broken), "--resume"])
    _, a = read_embeddings(full / "poi_embeddings.parquet")
    _, b = read_embeddings(broken / "poi_embeddings.parquet")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    stages_a = json.loads((full / "manifest.json").read_text())["stages"]
    stages_b = json.loads((broken / "manifest.json").read_text())["stages"]
    np.testing.assert_allclose(stages_a[0]["losses"], stages_b[0]["losses"], rtol=1e-5)
    # objective health after every stage (the resumed one too) is that of the uninterrupted run
    assert [s["health"].keys() for s in stages_a] == [s["health"].keys() for s in stages_b]
    for a_stage, b_stage in zip(stages_a, stages_b, strict=True):
        for name, h in a_stage["health"].items():
            assert b_stage["health"][name]["loss"] == pytest.approx(h["loss"], abs=2e-4)


def test_two_gloo_processes_end_with_identical_weights(tiny_city, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "mfm",
        "run",
        "--city",
        str(tiny_city),
        "--out",
        str(out),
        "--plugins",
        "osm",
        "--epochs",
        "2",
        "--quiet",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--dim",
        "16",
    ]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"]["world_size"] == 2
    sums = manifest["device"]["replica_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert manifest["stages"][0]["steps"] > 0


def test_kills_at_random_points_then_resume_end_like_an_uninterrupted_run(tiny_city, tmp_path):
    """Five kill points drawn at random (seeded) among every kind: inside a stage, between
    a checkpoint's weights and its JSON, after the baselines, during the export."""
    import random

    full = tmp_path / "full"
    _run(["--city", str(tiny_city), "--out", str(full)])
    _, want = read_embeddings(full / "poi_embeddings.parquet")
    kinds = [
        [f"step:{n}" for n in (1, 5, 9, 14)] + ["epoch:2"],  # inside a stage
        [f"checkpoint:{n}" for n in (1, 3, 6)],  # between a checkpoint's weights and JSON
        ["baselines:1", "export:1", "manifest:1"],  # around the outputs
    ]
    rng = random.Random(7)
    points = [rng.choice(kind) for kind in kinds]
    points += rng.sample([p for kind in kinds for p in kind if p not in points], 2)
    for point in points:
        out = tmp_path / point.replace(":", "-")
        killed = _run(
            ["--city", str(tiny_city), "--out", str(out)],
            env=os.environ | {"MFM_KILL_AT": point},
            check=False,
        )
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-500:])
        assert not (out / "manifest.json").exists()
        _run(["--out", str(out), "--resume"])  # finds its city in run.json
        _, got = read_embeddings(out / "poi_embeddings.parquet")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=point)


def test_min_steps_gives_small_stages_more_epochs(tmp_path):
    def epochs(n: int, min_steps: int) -> int:  # a stage of n items, batch 256
        s = TrainSettings(
            epochs=10,
            batch_size=256,
            lr=1e-3,
            warmup=0.1,
            weight_decay=0.0,
            seed=0,
            min_steps=min_steps,
        )
        trainer = Trainer(None, s, Runtime(torch.device("cpu")), tmp_path)  # type: ignore[arg-type]
        return trainer.stage_epochs(trainer._steps_per_epoch(n))

    assert epochs(448, 0) == 10  # the default keeps `epochs` literal
    assert epochs(448, 300) == 150  # 2 batches an epoch: 150 epochs for 300 steps
    assert epochs(100_000, 300) == 10  # a large stage already has more steps


def test_min_steps_reaches_every_stage_of_a_run(tiny_city, tmp_path):
    out = tmp_path / "run"
    run(
        make_config(
            city=tiny_city, out=out, plugins="osm", epochs=1, dim=16, quiet=True, min_steps=3
        )
    )
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert stages and all(s["steps"] >= 3 for s in stages)
    assert any(s["epochs"] > 1 for s in stages)  # the tiny city has 1-2 batches a stage
    assert all(s["steps"] < 3 + s["steps"] / s["epochs"] for s in stages)  # no extra epoch
