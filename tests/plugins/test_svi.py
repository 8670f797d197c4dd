import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig
from mfm.core.errors import ConfigError
from mfm.core.modality import Context
from mfm.core.model import UrbanModel
from mfm.core.plugins import LOAD_ENV, load_registry
from mfm.core.scales import Scale
from mfm.core.scene import build_scene_encoder, installed_scene_encoders
from mfm.plugins.svi.modality import (
    SviModality,
    SviOptions,
    facing_direction,
    gated_fusion,
    link_pois,
    spatial_attention,
)
from mfm.plugins.svi.objective import SviObjective, info_nce_multi, sample_directions

DIM = 16


@pytest.fixture(scope="module")
def city(tiny_city):
    return City.load(tiny_city)


def _ctx(city, cache_dir, dim=DIM):
    return Context(
        city, RunConfig(city=city.root), FeatureCache(cache_dir), torch.device("cpu"), dim
    )


def _model(city, cache_dir, **opts):
    """The svi modality on the tiny city (small images: fast) and L_svi, prepared."""
    torch.manual_seed(0)
    ctx = _ctx(city, cache_dir)
    svi = SviModality(SviOptions(image_size=32, **opts))
    svi.prepare(ctx)
    obj = SviObjective()
    model = UrbanModel([svi], [obj], DIM)
    obj.prepare(ctx)
    return model, obj, svi


# --- spatial-aware semantic consistency (Eq. 10-14) -------------------------------------------


def test_facing_direction_sectors():
    origin = np.zeros((6, 2))
    targets = np.array([[10, 0], [0, -10], [-10, 0], [0, 10], [10, 9], [9, 10]], float)
    assert facing_direction(origin, targets).tolist() == [0, 1, 2, 3, 0, 3]  # E S W N E N


def test_link_pois_nearest_first_with_anchor_direction_and_radius():
    pois = np.array([[0.0, 0.0], [5000.0, 0.0]])
    groups = np.array([[0.0, -300.0], [100.0, 0.0], [0.0, 2000.0]])
    links = link_pois(pois, groups, max_dist=1000.0, max_groups=16)
    assert links.mask.tolist() == [[True, True], [False, False]]  # POI 1 has none in 1 km
    assert links.group[0].tolist() == [1, 0]  # nearest first; group 2 is too far
    np.testing.assert_allclose(links.dist[0].numpy(), [100.0, 300.0])
    # POI 0 is west of group 1 and north of group 0
    assert links.direction[0].tolist() == [2, 3]
    capped = link_pois(pois, groups, max_dist=1000.0, max_groups=1)
    assert capped.group[0].tolist() == [1] and capped.mask[0].tolist() == [True]


def test_attention_without_query_follows_distance_weights():
    fused = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], [[1.0, 1.0], [2.0, 2.0], [0, 0]]])
    dist = torch.tensor([[0.0, 1000.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    emb, w = spatial_attention(fused, dist, mask, None, max_dist=1000.0, tau=0.5)
    b = torch.tensor([1.0, 0.5])  # Eq. 14: max_dist / (dist + max_dist)
    expected = torch.softmax(b / 0.5, dim=0)
    torch.testing.assert_close(w[0, :2], expected)
    assert w[0, 2] == 0 and w[0, 0] > w[0, 1]  # padding ignored, the nearer group weighs more
    torch.testing.assert_close(emb[0], expected[0] * fused[0, 0] + expected[1] * fused[0, 1])
    assert torch.equal(emb[1], torch.zeros(2)) and torch.isfinite(w).all()  # no group: zero


def test_attention_prefers_the_group_similar_to_the_text_query():
    fused = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    dist = torch.tensor([[500.0, 0.0]])  # the dissimilar group is nearer
    mask = torch.ones(1, 2, dtype=torch.bool)
    _, w = spatial_attention(fused, dist, mask, torch.tensor([[2.0, 0.0]]), 1000.0, 0.5)
    assert w[0, 0] > w[0, 1]
    logits = torch.tensor([1.0 * (2 / 3), -1.0 * 1.0]) / 0.5  # sim * b / tau
    torch.testing.assert_close(w[0], torch.softmax(logits, 0))


def test_gated_fusion_is_a_convex_combination_picked_by_the_gate():
    gate = nn.Linear(4, 2)
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.copy_(torch.tensor([20.0, 0.0]))
    a, c = torch.tensor([[1.0, 2.0]]), torch.tensor([[-3.0, 4.0]])
    torch.testing.assert_close(gated_fusion(a, c, gate), a, atol=1e-6, rtol=0)
    with torch.no_grad():
        gate.bias.zero_()
    torch.testing.assert_close(gated_fusion(a, c, gate), (a + c) / 2)


def test_poi_view_on_tiny_city(city, cache_dir):
    _, _, svi = _model(city, cache_dir, max_dist=40.0, max_groups=4)
    idx = torch.arange(len(city.pois))
    query = torch.randn(len(idx), DIM, requires_grad=True)
    view = svi.poi_view(idx, query=query)
    assert view.emb.shape == (len(idx), DIM)
    has = svi.poi_mask.any(1)
    assert torch.equal(view.mask, has) and 0 < has.sum() < len(idx)  # 40 m: some have none
    assert torch.equal(view.emb[~has], torch.zeros(int((~has).sum()), DIM))
    view.emb.sum().backward()  # the view trains the head, the gate and the text query
    assert svi.gate.weight.grad.abs().sum() > 0 and query.grad.abs().sum() > 0
    assert all(p.grad is not None for p in svi.head.parameters())
    assert torch.equal(svi.poi_view(idx).mask, has)  # without a query as well


# --- L_svi (Eq. 9) --------------------------------------------------------------------------


def test_info_nce_multi_rewards_the_positive_and_respects_the_mask():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cands = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    right, wrong = torch.tensor([0, 2]), torch.tensor([2, 0])
    assert info_nce_multi(a, cands, right) < info_nce_multi(a, cands, wrong)
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    logits = F.normalize(a, dim=-1) @ F.normalize(cands, dim=-1).T / 0.5
    manual = (
        -(
            logits[0, 0]
            - torch.logsumexp(logits[0, [0, 2, 3]], 0)
            + logits[1, 2]
            - torch.logsumexp(logits[1], 0)
        )
        / 2
    )
    torch.testing.assert_close(info_nce_multi(a, cands, right, mask), manual)
    per_anchor = cands[None].expand(2, -1, -1)  # [B, K, d] form gives the same loss
    torch.testing.assert_close(info_nce_multi(a, per_anchor, right, mask), manual)
    with pytest.raises(ValueError, match="positive"):
        info_nce_multi(a, cands, torch.tensor([1, 2]), mask)  # column 1 is masked in row 0


def test_sample_directions_are_distinct_and_cover_every_pair():
    alpha, beta = sample_directions(2000, torch.Generator().manual_seed(0))
    assert bool((alpha != beta).all()) and alpha.max() < 4 and beta.max() < 4
    assert len(set(zip(alpha.tolist(), beta.tolist(), strict=True))) == 12
    again = sample_directions(2000, torch.Generator().manual_seed(0))
    assert torch.equal(alpha, again[0]) and torch.equal(beta, again[1])


def test_loss_matches_eq9_written_out(city, cache_dir):
    model, _, svi = _model(city, cache_dir)
    idx = torch.tensor([3, 0, 7, 5, 11])
    loss = model("svi", idx, torch.Generator().manual_seed(1))
    alpha, beta = sample_directions(len(idx), torch.Generator().manual_seed(1))
    with torch.no_grad():
        views = svi.group_views(idx)
        scene = views.mean(1, keepdim=True).expand_as(views)  # the default "mean" scene
        e = F.normalize(torch.cat([views, scene], -1), dim=-1)  # [B, 4, 2d]
        total = 0.0
        for i in range(len(idx)):
            sims = (e @ e[i, alpha[i]]) / 0.5  # [B, 4]: every gamma of every group j
            keep = torch.ones_like(sims, dtype=torch.bool)
            keep[i, alpha[i]] = False  # the anchor itself
            total += -(sims[i, beta[i]] - torch.logsumexp(sims[keep], 0))
    torch.testing.assert_close(loss, total / len(idx))


def test_same_group_views_beat_shuffled_views(city, cache_dir):
    """Fails if positives were drawn from other groups (or negatives from the same one)."""
    model, _, svi = _model(city, cache_dir, scene="none")
    g = svi.num_groups
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(g, 1, 512, generator=gen).relu()
    aligned = base + 0.05 * torch.randn(g, 4, 512, generator=gen).relu()
    shuffled = aligned.reshape(g * 4, 512)[torch.randperm(g * 4, generator=gen)].reshape(g, 4, 512)
    idx = torch.arange(g)
    losses = []
    for feats in (aligned, shuffled):
        svi.features = feats
        losses.append(model("svi", idx, torch.Generator().manual_seed(0)).item())
    assert losses[0] < losses[1] - 0.5


def test_training_step_changes_every_trainable_weight(city, cache_dir):
    model, obj, svi = _model(city, cache_dir)
    assert obj.scale is Scale.MICRO and obj.num_items() == len(city.svi)
    assert obj.trainable() == [svi.head, svi.scene]
    head = [p for m in obj.trainable() for p in m.parameters()]
    before = [p.detach().clone() for p in head]
    opt = torch.optim.AdamW([p for m in obj.trainable() for p in m.parameters()], lr=1e-3)
    loss = model("svi", torch.arange(obj.num_items()), torch.Generator().manual_seed(0))
    loss.backward()
    # the head (shared by the four directions and the mean scene) trains; the POI gate
    # belongs to Eq. 12 and trains in the stages that use the POI view (local, global)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, head, strict=True))


def test_features_are_cached_and_not_checkpointed(city, tmp_path):
    ctx = _ctx(city, tmp_path)
    a, b = SviModality(SviOptions(image_size=16)), SviModality(SviOptions(image_size=16))
    a.prepare(ctx)
    b.prepare(ctx)
    assert ctx.cache.misses == 1 and ctx.cache.hits == 1
    assert a.features.shape == (len(city.svi), 4, 512) and torch.equal(a.features, b.features)
    assert not any(k.startswith(("features", "poi_")) for k in a.state_dict())


def test_scene_options(city, cache_dir):
    available = installed_scene_encoders()
    assert {"mean", "none"} <= set(available)  # registered by the svi plugin's hook
    with pytest.raises(ConfigError, match=r"llama2.*choose one of mean, none"):
        build_scene_encoder("llama2", available)
    model, _, _ = _model(city, cache_dir, scene="none")
    loss = model("svi", torch.arange(8), torch.Generator().manual_seed(0))
    assert math.isfinite(loss.item())


def test_skip_reason_and_registration(city, cache_dir, monkeypatch):
    _, obj, _ = _model(city, cache_dir)
    ctx = _ctx(city, cache_dir)
    assert obj.skip_reason(ctx.city) is None
    bare = SviObjective()
    UrbanModel([], [bare], DIM)
    assert "svi modality" in bare.skip_reason(ctx.city)
    monkeypatch.setenv(LOAD_ENV, "")
    info = load_registry(extra={"svi": "mfm.plugins.svi"}).plugins["svi"]
    assert list(info.modalities) == ["svi"] and list(info.objectives) == ["svi"]


def test_poi_view_uses_the_image_facing_the_poi(city, cache_dir):
    _, _, svi = _model(city, cache_dir, max_dist=60.0, max_groups=1)
    with torch.no_grad():  # a gate that keeps only the anchor image
        svi.gate.weight.zero_()
        svi.gate.bias.copy_(torch.tensor([50.0, 0.0]))
    has = svi.poi_mask[:, 0]
    idx = torch.nonzero(has).squeeze(1)
    group, direction = svi.poi_group[idx, 0], svi.poi_direction[idx, 0]
    assert len(set(direction.tolist())) > 1  # POIs are seen from several directions
    with torch.no_grad():
        expected = svi.head(svi.features[group, direction])
        torch.testing.assert_close(svi.poi_view(idx).emb, expected, atol=1e-5, rtol=1e-4)
        wrong = svi.head(svi.features[group, (direction + 2) % 4])
        assert not torch.allclose(svi.poi_view(idx).emb, wrong, atol=1e-3)
