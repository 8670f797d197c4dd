"""Road network: a region-level macro view (length by class, crossings, orientation)."""

from mfm.core.hookspecs import hookimpl
from mfm.plugins.road.modality import RoadModality


@hookimpl
def register_modalities(register):
    register(RoadModality)
