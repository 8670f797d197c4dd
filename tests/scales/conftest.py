"""Fixtures shared by the scale tests: a context on the tiny city and its text view."""

import pytest

from mfm.plugins.osm.modality import OsmText
from tests.scales.fakes import make_ctx


@pytest.fixture(scope="module")
def ctx(tiny_city, cache_dir):
    return make_ctx(tiny_city, cache_dir)


@pytest.fixture(scope="module")
def text(ctx):
    mod = OsmText()
    mod.prepare(ctx)
    return mod
