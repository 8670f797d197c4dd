"""L_poi (Eq. 6-7): a POI and the mean of the POIs on its road are a positive pair."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from mfm.core.errors import MfmError
from mfm.core.graphs import group_members, nearest_line
from mfm.core.losses import DEFAULT_TAU, info_nce
from mfm.core.modality import Context, Objective, Options
from mfm.core.model import UrbanModel
from mfm.core.scales import Scale


class PoiRoadOptions(Options):
    """Options of ``[objective.poi]``."""

    max_road_dist: float = Field(150.0, gt=0, description="metres from a POI to its road")
    min_pois: int = Field(2, ge=2, description="roads with fewer POIs are not items")
    tau: float = Field(DEFAULT_TAU, gt=0)


class PoiRoadObjective(Objective):
    """Items are roads; each step samples one POI per road as the anchor and contrasts it
    with the road representation E_avg (the average of its POIs' text views)."""

    name = "poi"
    scale = Scale.MICRO
    Options = PoiRoadOptions

    def skip_reason(self, model: UrbanModel, ctx: Context) -> str | None:
        if "osm" not in model.modalities:
            return "needs the osm modality"
        if not ctx.city.has("roads"):
            return "needs a roads layer in the city"
        return None

    def prepare(self, model: UrbanModel, ctx: Context) -> None:
        opts: PoiRoadOptions = self.options  # type: ignore[assignment]
        city = ctx.city
        roads = city.roads.to_crs(city.crs).geometry.to_numpy()
        road, dist = nearest_line(city.xy("pois"), roads)
        road[dist > opts.max_road_dist] = -1
        ptr, members = group_members(road, len(roads))
        counts = np.diff(ptr)
        keep = np.flatnonzero(counts >= opts.min_pois)
        self.ptr = torch.as_tensor(ptr)
        self.members = torch.as_tensor(members)
        self.roads = torch.as_tensor(keep)
        if len(keep) < 2:
            raise MfmError(
                f"L_poi: only {len(keep)} roads have {opts.min_pois}+ POIs within "
                f"{opts.max_road_dist} m; raise [objective.poi] max_road_dist"
            )

    def num_items(self) -> int:
        return len(self.roads)

    def loss(self, model: UrbanModel, idx: Tensor, rng: torch.Generator) -> Tensor:
        text = model.modalities["osm"]
        roads = self.roads[idx]
        start, count = self.ptr[roads], self.ptr[roads + 1] - self.ptr[roads]
        pick = start + (torch.rand(len(roads), generator=rng) * count).long()
        anchor = text.poi_view(self.members[pick]).emb
        seg = torch.repeat_interleave(torch.arange(len(roads)), count)
        offsets = torch.arange(int(count.sum())) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count
        )
        all_members = self.members[torch.repeat_interleave(start, count) + offsets]
        emb = text.poi_view(all_members).emb
        seg = seg.to(emb.device)
        road_mean = torch.zeros(len(roads), emb.shape[1], device=emb.device, dtype=emb.dtype)
        road_mean = road_mean.index_add(0, seg, emb) / count.to(emb.device)[:, None]
        return info_nce(anchor, road_mean, self.options.tau)  # type: ignore[attr-defined]

    def trainable(self, model: UrbanModel) -> list[nn.Module]:
        return [model.modalities["osm"]]
