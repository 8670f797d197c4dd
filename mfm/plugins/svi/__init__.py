"""Street-view imagery: direction views, L_svi (Eq. 8-9) and the POI view (Eq. 10-14)."""

from mfm.core.hookspecs import hookimpl
from mfm.plugins.svi.modality import SviModality
from mfm.plugins.svi.objective import SviObjective
from mfm.plugins.svi.scene import MeanScene, NoScene


@hookimpl
def register_modalities(register):
    register(SviModality)


@hookimpl
def register_objectives(register):
    register(SviObjective)


@hookimpl
def register_scene_encoders(register):
    register(MeanScene)
    register(NoScene)
