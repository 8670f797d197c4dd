"""OSM text modality (paper Eq. 3) and the micro objective L_poi (Eq. 6-7)."""

from mfm.core.hookspecs import hookimpl
from mfm.plugins.osm.modality import OsmText
from mfm.plugins.osm.objective import PoiRoadObjective


@hookimpl
def register_modalities(register):
    register(OsmText)


@hookimpl
def register_objectives(register):
    register(PoiRoadObjective)
