"""The base class of modalities: frozen features, trainable heads, and the views they offer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

if TYPE_CHECKING:
    from mfm.core.bundle.city import City
    from mfm.core.cache import FeatureCache
    from mfm.core.config import RunConfig
    from mfm.core.scene import SceneEncoder


def freeze(module: nn.Module) -> nn.Module:
    """Mark a backbone's parameters frozen: no stage trains them, whatever it asks for."""
    for p in module.parameters():
        p.requires_grad_(False)
        p.mfm_frozen = True  # type: ignore[attr-defined]
    return module


def is_frozen(param: nn.Parameter) -> bool:
    """True for parameters of a backbone marked with ``freeze``."""
    return bool(getattr(param, "mfm_frozen", False))


class View(StrEnum):
    """Kinds of embedding a modality can offer to the cross-modal scale objectives."""

    POI = "poi"  # one embedding per POI (text, polygon, street view)
    REGION = "region"  # one macro embedding per region (satellite, trajectories)


class Options(BaseModel):
    """Base of every plugin's options: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


def _installed_scene_encoders() -> dict[str, type[SceneEncoder]]:
    from mfm.core.scene import installed_scene_encoders

    return installed_scene_encoders()


@dataclass
class Context:
    """What a modality or objective may use while it prepares for a run."""

    city: City
    config: RunConfig
    cache: FeatureCache
    device: torch.device
    dim: int
    quiet: bool = False
    rank: int = 0
    extras: dict[str, object] = field(default_factory=dict)
    scene_encoders: dict[str, type[SceneEncoder]] = field(default_factory=_installed_scene_encoders)


@dataclass
class PoiView:
    """A batch of POI-level embeddings and which of them exist."""

    emb: Tensor  # [B, d]
    mask: Tensor  # [B] bool: False where the POI has no such view (emb is zero there)


class Modality(nn.Module, ABC):
    """A data modality: frozen backbone features plus trainable heads to width ``dim``.

    Subclasses set ``name``, ``layers`` (bundle layers they need), ``views`` and
    ``Options``, build heads in ``prepare`` and implement the view methods they offer.
    """

    name: ClassVar[str]
    layers: ClassVar[tuple[str, ...]] = ()
    views: ClassVar[frozenset[View]] = frozenset()
    anchor: ClassVar[bool] = False  # True for the POI view other views are compared with (text)
    order: ClassVar[int] = 100  # fusion order among views of one kind (paper: text, svi, polygon)
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else type(self).Options()

    def unavailable(self, city: City) -> str | None:
        """Why this modality cannot run on ``city`` beyond missing layers (e.g. a missing
        file), or None. A run that names the plugin fails with it; a default run drops it."""
        return None

    @abstractmethod
    def prepare(self, ctx: Context) -> None:
        """Compute (or load from cache) frozen features and build the trainable heads."""

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        """Embeddings ``[B, d]`` of POIs ``idx``; ``query`` is the anchor (text) view if any."""
        raise NotImplementedError(f"modality {self.name!r} offers no POI view")

    def region_view(self, idx: Tensor) -> Tensor:
        """Macro embeddings ``[B, d]`` of regions ``idx``."""
        raise NotImplementedError(f"modality {self.name!r} offers no region view")

    def raw_features(self) -> Tensor | None:
        """The frozen input features, one row per POI (POI view) or region (region view).

        What the model starts from: ``mfm eval`` probes them as the ``raw`` baseline. The
        default is the ``features`` buffer when it is 2-D; override to aggregate otherwise.
        """
        feats = getattr(self, "features", None)
        return feats if isinstance(feats, Tensor) and feats.dim() == 2 else None

    def backbone(self) -> dict[str, object] | None:
        """Identity (model id, weights hash) of the frozen backbone whose features this
        modality reads, or None. A run records it; ``mfm embed`` checks it is unchanged."""
        return None

    def fingerprint(self) -> dict[str, object]:
        """What identifies this modality's frozen features (for the run manifest)."""
        return self.options.model_dump(mode="json")
