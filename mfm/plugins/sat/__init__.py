"""Satellite tiles (paper Eq. 1) and the macro objective L_sate (Eq. 17-22)."""

from mfm.core.hookspecs import hookimpl
from mfm.plugins.sat.modality import SatModality
from mfm.plugins.sat.objective import SateObjective


@hookimpl
def register_modalities(register):
    register(SatModality)


@hookimpl
def register_objectives(register):
    register(SateObjective)
