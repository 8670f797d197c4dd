"""L_flow: a region's flow embedding predicts where its trips go (MACRO slot).

Not in the paper (it feeds trajectories into L_global only). Items are the distinct
origin-destination pairs between two different regions; for a batch of pairs, the
origin's flow view is the anchor and a learned "arrival" projection of the destination's
flow view the positive, the other destinations of the batch the negatives (InfoNCE,
tau = 0.5, Eq. 7), each pair weighted by log(1 + its trip count). The same destination
twice in a batch is not its own negative. So regions whose trips go to the same places
embed alike, which is what the strongest mobility-based region models learn from.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from mfm.core.bundle.city import City
from mfm.core.losses import DEFAULT_TAU
from mfm.core.modality import Context, Options
from mfm.core.objective import Objective
from mfm.core.scales import Scale
from mfm.plugins.trajectory.modality import FlowModality


class FlowObjectiveOptions(Options):
    """Options of L_flow (``[objective.flow]`` in the run config)."""

    tau: float = Field(DEFAULT_TAU, gt=0, description="InfoNCE temperature")


class FlowObjective(Objective):
    """Contrast each trip's origin with its destination among the batch's destinations."""

    name = "flow"
    scale = Scale.MACRO
    Options = FlowObjectiveOptions
    options: FlowObjectiveOptions
    modality = "flows"
    layers = ("regions",)
    encoder: FlowModality

    def plan_note(self, city: City) -> str:
        source = "the od layer" if city.has("od") else "trajectory end points"
        return f"origin -> destination pairs from {source}"

    def prepare(self, ctx: Context) -> None:
        o, d = self.encoder.pairs
        moves = o != d
        self.origin, self.destination = o[moves], d[moves]
        self.weight = torch.log1p(self.encoder.counts[moves]).float()
        self.arrival = nn.Linear(ctx.dim, ctx.dim)

    def num_items(self) -> int:
        return len(self.origin)

    def stats(self) -> dict[str, object]:
        return {"pairs": len(self.origin), "trips": float(self.weight.expm1().sum())}

    def trainable(self) -> list[nn.Module]:
        return [self.encoder, self.arrival]

    def loss(self, idx: Tensor, rng: torch.Generator) -> Tensor:
        o, d = self.origin[idx], self.destination[idx]
        anchor = self.encoder.region_view(o)
        positive = self.arrival(self.encoder.region_view(d))
        same = d[:, None] == d[None, :]
        return self.contrast(anchor, positive, exclude=same, weight=self.weight[idx])
