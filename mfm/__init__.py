"""mfm: UrbanMFM, a plugin-based multimodal, multiscale urban foundation model.

Everything a user or a plugin author needs is importable from here::

    import mfm
    result = mfm.run(mfm.make_config(city="path/to/city", plugins="osm,svi"))

    class Terrain(mfm.Modality): ...
    class TerrainContrast(mfm.Objective): ...

    @mfm.hookimpl
    def register_modalities(register):
        register(Terrain)

Names load on first use, so ``import mfm`` (and ``mfm --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import TYPE_CHECKING, Any

try:
    __version__ = _dist_version("urban-mfm")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # plugin API
    "hookimpl": "mfm.core.hookspecs",
    "Modality": "mfm.core.modality",
    "Options": "mfm.core.modality",
    "Context": "mfm.core.modality",
    "View": "mfm.core.modality",
    "PoiView": "mfm.core.modality",
    "freeze": "mfm.core.modality",
    "Objective": "mfm.core.objective",
    "Views": "mfm.core.views",
    "Scale": "mfm.core.scales",
    "SceneEncoder": "mfm.core.scene",
    "ProjectionHead": "mfm.core.heads",
    "InfoNCE": "mfm.core.losses",
    "info_nce": "mfm.core.losses",
    "DEFAULT_TAU": "mfm.core.losses",
    "City": "mfm.core.bundle.city",
    "FeatureCache": "mfm.core.cache",
    "UrbanModel": "mfm.core.model",
    "log": "mfm.core.progress",
    "progress_bar": "mfm.core.progress",
    # errors
    "MfmError": "mfm.core.errors",
    "CityError": "mfm.core.errors",
    "ConfigError": "mfm.core.errors",
    "PluginError": "mfm.core.errors",
    # running
    "RunConfig": "mfm.core.config",
    "make_config": "mfm.core.config",
    "load": "mfm.core.trained",
    "TrainedModel": "mfm.core.trained",
}

__all__ = [
    "DEFAULT_TAU",
    "City",
    "CityError",
    "ConfigError",
    "Context",
    "FeatureCache",
    "InfoNCE",
    "MfmError",
    "Modality",
    "Objective",
    "Options",
    "PluginError",
    "PoiView",
    "ProjectionHead",
    "RunConfig",
    "Scale",
    "SceneEncoder",
    "TrainedModel",
    "UrbanModel",
    "View",
    "Views",
    "__version__",
    "freeze",
    "hookimpl",
    "info_nce",
    "load",
    "log",
    "make_config",
    "progress_bar",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mfm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def run(config: Any, resume: bool = False, overwrite: bool = False) -> Any:
    """Train on ``config.city`` (the synthetic default when None) and write embeddings."""
    from mfm.core.pipeline import run as run_pipeline

    if config.city is None:
        from mfm.cities.default import default_city

        config.city = default_city(cache_dir=config.cache_dir)
    return run_pipeline(config, resume=resume, overwrite=overwrite)


if TYPE_CHECKING:
    from mfm.core.bundle.city import City
    from mfm.core.cache import FeatureCache
    from mfm.core.config import RunConfig, make_config
    from mfm.core.errors import CityError, ConfigError, MfmError, PluginError
    from mfm.core.heads import ProjectionHead
    from mfm.core.hookspecs import hookimpl
    from mfm.core.losses import DEFAULT_TAU, InfoNCE, info_nce
    from mfm.core.modality import Context, Modality, Options, PoiView, View, freeze
    from mfm.core.model import UrbanModel
    from mfm.core.objective import Objective
    from mfm.core.progress import log, progress_bar
    from mfm.core.scales import Scale
    from mfm.core.scene import SceneEncoder
    from mfm.core.trained import TrainedModel, load
    from mfm.core.views import Views
