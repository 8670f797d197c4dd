"""L_poi (Eq. 6-7): a POI and the mean of the POIs on its road are a positive pair.

Without a roads layer the groups are spatial instead: POIs in the same square cell of
``cell_m`` metres (in the city's metric CRS; 200 m by default, the scale of a block face
and close to twice ``max_road_dist``), so the objective still runs. The paper has roads
everywhere and says nothing about cities without them; the run plan names the grouping.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from mfm.core.bundle.city import City
from mfm.core.errors import MfmError
from mfm.core.graphs import group_members, nearest_line
from mfm.core.losses import DEFAULT_TAU
from mfm.core.modality import Context, Options
from mfm.core.objective import Objective
from mfm.core.scales import Scale


class PoiRoadOptions(Options):
    """Options of ``[objective.poi]``."""

    max_road_dist: float = Field(150.0, gt=0, description="metres from a POI to its road")
    min_pois: int = Field(2, ge=2, description="groups with fewer POIs are not items")
    cell_m: float = Field(200.0, gt=0, description="grid cell of the groups without roads")
    tau: float = Field(DEFAULT_TAU, gt=0)


class PoiRoadObjective(Objective):
    """Items are roads; each step samples one POI per road as the anchor and contrasts it
    with the road representation E_avg (the average of its POIs' text views)."""

    name = "poi"
    scale = Scale.MICRO
    Options = PoiRoadOptions
    options: PoiRoadOptions
    modality = "osm"

    def plan_note(self, city: City) -> str:
        if city.has("roads"):
            return "POIs grouped by nearest road"
        return f"no roads layer: POIs grouped by {self.options.cell_m:g} m grid cells"

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        group, n_groups = (
            self._road_groups(ctx.city) if ctx.city.has("roads") else self._cell_groups(ctx.city)
        )
        ptr, members = group_members(group, n_groups)
        counts = np.diff(ptr)
        keep = np.flatnonzero(counts >= opts.min_pois)
        self.ptr = torch.as_tensor(ptr)
        self.members = torch.as_tensor(members)
        self.roads = torch.as_tensor(keep)
        if len(keep) < 2:
            hint = "max_road_dist" if ctx.city.has("roads") else "cell_m"
            raise MfmError(
                f"L_poi: only {len(keep)} groups hold {opts.min_pois}+ POIs; "
                f"raise [objective.poi] {hint}"
            )

    def _road_groups(self, city: City) -> tuple[np.ndarray, int]:
        """Each POI's nearest road within ``max_road_dist`` (-1: none)."""
        roads = city.roads.to_crs(city.crs).geometry.to_numpy()
        road, dist = nearest_line(city.xy("pois"), roads)
        road[dist > self.options.max_road_dist] = -1
        return road, len(roads)

    def _cell_groups(self, city: City) -> tuple[np.ndarray, int]:
        """Each POI's ``cell_m`` grid cell, numbered densely."""
        cells = np.floor(city.xy("pois") / self.options.cell_m).astype(np.int64)
        _, group = np.unique(cells, axis=0, return_inverse=True)
        return group.reshape(-1), int(group.max(initial=-1)) + 1

    def num_items(self) -> int:
        return len(self.roads)

    def loss(self, idx: Tensor, rng: torch.Generator) -> Tensor:
        text = self.encoder
        roads = self.roads[idx]
        start, count = self.ptr[roads], self.ptr[roads + 1] - self.ptr[roads]
        pick = (torch.rand(len(roads), generator=rng) * count).long()  # offset in its road
        first = torch.cumsum(count, 0) - count  # where each road's POIs start in the batch
        seg = torch.repeat_interleave(torch.arange(len(roads)), count)
        offsets = torch.arange(int(count.sum())) - torch.repeat_interleave(first, count)
        all_members = self.members[torch.repeat_interleave(start, count) + offsets]
        # each POI of the batch is encoded once, the anchor included (a fine-tuned encoder
        # then runs once per POI; under its dropout the anchor shares its road row's mask)
        emb = text.poi_view(all_members).emb
        anchor = emb[(first + pick).to(emb.device)]
        seg = seg.to(emb.device)
        road_mean = torch.zeros(len(roads), emb.shape[1], device=emb.device, dtype=emb.dtype)
        road_mean = road_mean.index_add(0, seg, emb) / count.to(emb.device)[:, None]
        return self.contrast(anchor, road_mean)
