"""The base class of contrastive objectives: each fills one scale slot and trains a stage.

An objective sees no model. The host binds it to the run's :class:`~mfm.core.views.Views`
before anything else: ``self.views`` (every selected modality, by view) and, when the
class names one in ``modality``, ``self.encoder`` (that modality, or None when the run
does not select it). The default ``skip_reason`` and ``trainable`` follow from
``modality`` and ``layers``, so a modality objective implements ``num_items`` and
``loss`` and, where it mines pairs or builds graphs, ``prepare``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from mfm.core.losses import DEFAULT_TAU, info_nce
from mfm.core.modality import Context, Modality, Options
from mfm.core.scales import Scale
from mfm.core.views import Views

if TYPE_CHECKING:
    from mfm.core.bundle.city import City


class Objective(nn.Module, ABC):
    """A contrastive objective. Items are what a batch indexes (POIs, roads, regions ...).

    Subclasses set ``name``, ``scale``, ``Options`` and, for a modality objective,
    ``modality`` (the modality it trains) and ``layers`` (bundle layers it needs).
    """

    name: ClassVar[str]
    scale: ClassVar[Scale]
    modality: ClassVar[str | None] = None
    layers: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[Options]] = Options

    views: Views
    encoder: Any  # the bound ``modality`` (annotate it with its class in a subclass)

    def __init__(self, options: Options | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else type(self).Options()

    def bind(self, views: Views) -> None:
        """Called by the host: the run's views and this objective's modality.

        Stored as plain references, not submodules: the model owns the modalities.
        """
        object.__setattr__(self, "views", views)
        object.__setattr__(self, "encoder", views.get(self.modality) if self.modality else None)

    def skip_reason(self, city: City) -> str | None:
        """Why this objective cannot run with the selected plugins and data, or None."""
        if self.modality is not None and self.encoder is None:
            return f"needs the {self.modality} modality"
        missing = [layer for layer in self.layers if not city.has(layer)]
        if missing:
            return f"needs a {missing[0]} layer in the city"
        return None

    def stats(self) -> dict[str, object]:
        """What ``prepare`` found (e.g. mined pairs), written to the run manifest."""
        return {}

    def plan_note(self, city: City) -> str | None:
        """How it runs, for the run plan (e.g. which variant and why), or None."""
        return None

    def prepare(self, ctx: Context) -> None:
        """Mine pairs / build graphs and the objective's own modules (once per run)."""

    @abstractmethod
    def num_items(self) -> int:
        """How many items one epoch iterates over."""

    @abstractmethod
    def loss(self, idx: Tensor, rng: torch.Generator) -> Tensor:
        """The loss of one batch of items ``idx`` (CPU LongTensor); ``rng`` drives sampling."""

    def candidates(self, batch: int) -> int:
        """How many candidates each anchor of a ``batch``-item batch is contrasted with;
        the loss at chance is the log of it (the run's objective health)."""
        return batch

    def contrast(
        self,
        anchor: Tensor,
        positive: Tensor,
        exclude: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        """InfoNCE (:func:`mfm.core.losses.info_nce`, the objective's ``tau``) through the
        objective's contrast head (:class:`mfm.core.heads.ContrastHead`, or none when the
        run sets ``contrast_head = false``)."""
        head = getattr(self, "contrast_head", None)
        if head is not None:
            anchor, positive = head(anchor), head(positive)
        tau = getattr(self.options, "tau", DEFAULT_TAU)
        return info_nce(anchor, positive, tau, exclude, weight)

    def stage_modules(self) -> list[nn.Module]:
        """What this objective's stage optimizes: :meth:`trainable` and its contrast head."""
        head = getattr(self, "contrast_head", None)
        return [*self.trainable(), *([head] if head is not None else [])]

    def trainable(self) -> list[nn.Module]:
        """The modules this stage trains: by default the bound modality."""
        if not isinstance(self.encoder, Modality):
            raise NotImplementedError(f"objective {self.name!r} must say what it trains")
        return [self.encoder]

    def poi_embeddings(self) -> Tensor | None:
        """Extra POI embeddings ``[N_poi, d]``, exported as the column ``<name>_embedding``."""
        return None

    def region_embeddings(self) -> Tensor | None:
        """Region embeddings ``[N_region, d]`` if this objective defines them."""
        return None
