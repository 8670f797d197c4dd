"""mfm: UrbanMFM, a plugin-based multimodal, multiscale urban foundation model.

The public API::

    import mfm
    result = mfm.run(mfm.make_config(city="path/to/city", plugins="osm,svi"))
"""

from mfm.core.config import RunConfig, make_config
from mfm.core.errors import CityError, ConfigError, MfmError, PluginError
from mfm.core.hookspecs import hookimpl
from mfm.core.losses import InfoNCE, info_nce
from mfm.core.modality import Context, Modality, Objective, Options, PoiView, View
from mfm.core.scales import Scale

__all__ = [
    "CityError",
    "ConfigError",
    "Context",
    "InfoNCE",
    "MfmError",
    "Modality",
    "Objective",
    "Options",
    "PluginError",
    "PoiView",
    "RunConfig",
    "Scale",
    "View",
    "hookimpl",
    "info_nce",
    "make_config",
    "run",
]


def run(config: RunConfig, resume: bool = False):
    """Train on ``config.city`` (the synthetic default when None) and write embeddings."""
    from mfm.core.pipeline import run as run_pipeline

    if config.city is None:
        from mfm.cities.default import default_city

        config.city = default_city(cache_dir=config.cache_dir)
    return run_pipeline(config, resume=resume)
