"""Base classes that plugins subclass: a Modality offers views, an Objective trains them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from mfm.core.scales import Scale

if TYPE_CHECKING:
    from mfm.core.cache import FeatureCache
    from mfm.core.city import City
    from mfm.core.config import RunConfig
    from mfm.core.model import UrbanModel


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


@dataclass
class PoiView:
    """A batch of POI-level embeddings and which of them exist."""

    emb: Tensor  # [B, d]
    mask: Tensor  # [B] bool: False where the POI has no such view (emb is zero there)


class Modality(nn.Module):
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

    def prepare(self, ctx: Context) -> None:
        """Compute (or load from cache) frozen features and build the trainable heads."""
        raise NotImplementedError(f"modality {self.name!r} must implement prepare()")

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

    def fingerprint(self) -> dict[str, object]:
        """What identifies this modality's frozen features (for the run manifest)."""
        return self.options.model_dump(mode="json")


class Objective(nn.Module):
    """A contrastive objective that fills a scale slot and trains for one stage.

    Items are what a batch indexes (POIs, roads, street-view groups, regions).
    """

    name: ClassVar[str]
    scale: ClassVar[Scale]
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else type(self).Options()

    def skip_reason(self, model: UrbanModel, ctx: Context) -> str | None:
        """Why this objective cannot run with the selected plugins and data, or None."""
        return None

    def prepare(self, model: UrbanModel, ctx: Context) -> None:
        """Mine pairs / build graphs and the objective's own modules (once per run)."""

    def num_items(self) -> int:
        """How many items one epoch iterates over."""
        raise NotImplementedError

    def loss(self, model: UrbanModel, idx: Tensor, rng: torch.Generator) -> Tensor:
        """The loss of one batch of items ``idx`` (CPU LongTensor); ``rng`` drives sampling."""
        raise NotImplementedError

    def candidates(self, batch: int) -> int:
        """How many candidates each anchor of a ``batch``-item batch is contrasted with;
        the loss at chance is the log of it (the run's objective health)."""
        return batch

    def trainable(self, model: UrbanModel) -> list[nn.Module]:
        """The modules this stage trains (their parameters get gradients and updates)."""
        raise NotImplementedError

    def poi_embeddings(self, model: UrbanModel) -> Tensor | None:
        """Extra POI embeddings ``[N_poi, d]``, exported as the column ``<name>_embedding``."""
        return None

    def region_embeddings(self, model: UrbanModel) -> Tensor | None:
        """Final region embeddings ``[N_region, d]`` if this objective defines them."""
        return None
