"""Mobility: GPS trajectories and origin-destination flows, region-level macro views.

``trajectory``: per-region mobility densities (paper V-D, fed to L_global); ``flows``:
where each region's trips go and come from, with its own objective L_flow (MACRO).
"""

from mfm.core.hookspecs import hookimpl
from mfm.plugins.trajectory.modality import FlowModality, TrajectoryModality
from mfm.plugins.trajectory.objective import FlowObjective


@hookimpl
def register_modalities(register):
    register(TrajectoryModality)
    register(FlowModality)


@hookimpl
def register_objectives(register):
    register(FlowObjective)
