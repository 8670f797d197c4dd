"""The worked example runs from start to end on the tiny city."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_runs_on_the_tiny_city(tmp_path):
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, SCRIPT, "--size", "tiny", "--epochs", "1", "--workdir", tmp_path]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "most like" in done.stdout
    assert "second city, transferred model: R2" in done.stdout
    assert (tmp_path / "embedded" / "region_embeddings.parquet").is_file()
