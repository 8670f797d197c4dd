"""Test configuration: no network, temporary caches, one tiny synthetic city per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="mfm-tests-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(_TMP / "hf"))
os.environ.setdefault("TORCH_HOME", str(_TMP / "torch"))
os.environ["MFM_CACHE"] = str(_TMP / "mfm-cache")  # features shared by tests in a session
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_city() -> Path:
    """The tiny synthetic city (all five modalities), generated once per session."""
    from mfm.cities.synth import generate_city

    root = _TMP / "cities" / "tiny"
    if not root.exists():
        generate_city(root, size="tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The session's shared feature cache."""
    return Path(os.environ["MFM_CACHE"])
