"""The composed model: the selected modalities and objectives in one module tree."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mfm.core.modality import Modality
from mfm.core.objective import Objective
from mfm.core.views import Views


class UrbanModel(nn.Module):
    """Modalities (encoders and heads) and objectives (their own modules, e.g. GATs).

    Composing the model binds every objective to the modalities' :class:`Views`.
    ``forward(objective, idx, rng)`` returns that objective's loss on a batch, so a single
    module can be wrapped by DistributedDataParallel for every stage.
    """

    def __init__(self, modalities: list[Modality], objectives: list[Objective], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.modalities = nn.ModuleDict({m.name: m for m in modalities})
        self.objectives = nn.ModuleDict({o.name: o for o in objectives})
        self.views = Views(modalities)
        for obj in objectives:
            obj.bind(self.views)

    def forward(self, objective: str, idx: Tensor, rng: torch.Generator) -> Tensor:
        return self.objectives[objective].loss(idx, rng)

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.parameters()), torch.device("cpu"))
