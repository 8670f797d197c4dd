"""POI footprint polygons (paper Eq. 4): rasterized shape + area through frozen ResNet18."""

from mfm.core.hookspecs import hookimpl
from mfm.plugins.polygon.modality import PolygonModality


@hookimpl
def register_modalities(register):
    register(PolygonModality)
