"""GPS trajectories: a region-level macro view for the global scale (paper V-D)."""

from mfm.core.hookspecs import hookimpl
from mfm.plugins.trajectory.modality import TrajectoryModality


@hookimpl
def register_modalities(register):
    register(TrajectoryModality)
