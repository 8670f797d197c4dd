import math

import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import LineString, box

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig
from mfm.core.modality import Context, View
from mfm.core.model import UrbanModel
from mfm.plugins.sat.features import (
    dbscan_labels,
    mine_positive_pairs,
    poi_category,
    poi_distribution_features,
    road_features,
    scale_blocks,
    top_categories,
)
from mfm.plugins.sat.modality import AugmentedImages, SatModality, dihedral
from mfm.plugins.sat.objective import SateObjective

# ----------------------------------------------------------------------- pair mining


def _brute_force(fp, fr, t_p, t_r):
    pairs = set()
    for i in range(len(fp)):
        for j in range(len(fp)):
            if i == j:
                continue
            norms = [np.linalg.norm(v) for v in (fp[i], fp[j], fr[i], fr[j])]
            if min(norms) == 0:
                continue
            cp = fp[i] @ fp[j] / (norms[0] * norms[1])
            cr = fr[i] @ fr[j] / (norms[2] * norms[3])
            if cp >= t_p and cr >= t_r:
                pairs.add((i, j))
    return pairs


def test_mining_selects_exactly_the_pairs_above_both_thresholds():
    fp = np.array(
        [
            [1, 0, 0],  # 0
            [1, 0.1, 0],  # 1: cos(0, 1) = 0.995
            [0, 1, 0],  # 2
            [0, 1, 0.2],  # 3: cos_p(2, 3) = 0.98 but roads differ
            [1, 0.5, 0],  # 4: cos(0, 4) = 0.894, cos(1, 4) = 0.93: below
            [0, 0, 0],  # 5: no POIs: no cosine, no pairs
            [2, 0, 0],  # 6: same direction as 0
        ],
        dtype=float,
    )
    fr = np.array([[1, 1], [1, 1.1], [1, 0], [0, 1], [1, 1], [1, 1], [5, 5]], dtype=float)
    expected = {(0, 1), (0, 6), (1, 6)}
    expected |= {(j, i) for i, j in expected}
    for block in (1, 2, 1024):
        got = mine_positive_pairs(fp, fr, 0.95, block=block)
        assert got.dtype == np.int64 and got.shape[1] == 2
        assert set(map(tuple, got.tolist())) == expected
    assert set(map(tuple, mine_positive_pairs(fp, fr).tolist())) == _brute_force(fp, fr, 0.95, 0.95)
    # the road half of the rule matters: without it 2-3 becomes a pair
    only_poi = set(map(tuple, mine_positive_pairs(fp, None).tolist()))
    assert {(2, 3), (3, 2)} <= only_poi and (2, 3) not in expected


def test_mining_equals_brute_force_on_random_features():
    rng = np.random.default_rng(0)
    base = rng.random((6, 8))
    fp = base[rng.integers(0, 6, 60)] + 0.15 * rng.random((60, 8))
    fp[rng.random(60) < 0.1] = 0
    fr = rng.random((60, 2)) + np.array([1.0, 0.0])
    ref = _brute_force(fp, fr, 0.97, 0.9)
    assert 20 < len(ref) < 60 * 59  # a non-trivial case
    for block in (1, 7, 1024):
        got = mine_positive_pairs(fp, fr, 0.97, block=block, threshold_r=0.9)
        assert set(map(tuple, got.tolist())) == ref
    capped = mine_positive_pairs(fp, fr, 0.97, threshold_r=0.9, max_per_region=2)
    assert np.bincount(capped[:, 0]).max() <= 2
    assert set(map(tuple, capped.tolist())) <= ref


# ----------------------------------------------------------------------- region features


def test_poi_category_and_top_k():
    assert poi_category({"name": "X", "shop": "bakery", "amenity": "cafe"}) == "amenity=cafe"
    assert poi_category({"name": "X"}) is None
    tags = [{"amenity": "cafe"}] * 3 + [{"shop": "bakery"}] * 2 + [{"leisure": "park"}, {}]
    code, names = top_categories(tags, 2)
    assert names == ["amenity=cafe", "shop=bakery"]
    assert code.tolist() == [0, 0, 0, 1, 1, -1, -1]


def test_grouped_dbscan_equals_one_dbscan_per_group():
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(1)
    xy = rng.random((300, 2))
    group = rng.integers(0, 12, 300)
    for min_pts in (2, 3):
        labels = dbscan_labels(xy, group, 0.08, min_pts)
        for g in range(12):
            rows = np.flatnonzero(group == g)
            ref = DBSCAN(eps=0.08, min_samples=min_pts).fit(xy[rows]).labels_
            got = labels[rows]
            assert np.array_equal(got < 0, ref < 0)
            # same partition up to renaming
            pairs = {(a, b) for a, b in zip(got[ref >= 0], ref[ref >= 0], strict=True)}
            assert len(pairs) == len(set(ref[ref >= 0])) == len({a for a, _ in pairs})


def _square(cx, cy, side):
    return box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def test_dbscan_features_are_translation_invariant():
    side = 400.0
    regions = np.array([_square(0, 0, side), _square(5000, -2000, side), _square(0, 900, side)])
    layout = np.array([[10, 10], [14, 12], [12, 16], [-150, 120], [60, -90], [64, -88]], float)
    cats = np.array([0, 0, 0, 0, 1, 1])
    other = layout * np.array([1.0, -0.5])  # region 2: a different layout
    xy = np.concatenate([layout, layout + np.array([5000, -2000]), other + np.array([0, 900])])
    region = np.repeat([0, 1, 2], 6)
    centroids = shapely.get_coordinates(shapely.centroid(regions))
    area = shapely.area(regions)
    fp = poi_distribution_features(xy, region, np.tile(cats, 3), centroids, area, 3)
    assert np.allclose(fp[0], fp[1]) and fp[0].any()
    assert not np.allclose(fp[0], fp[2])
    assert fp[0][4:].tolist() == [0, 0]  # category 2 absent: zeros


def test_dbscan_feature_values_follow_eq_18_19():
    r_eq = 100.0  # equivalent-circle radius: area = pi * 100^2 m2
    region = np.array([_square(0, 0, r_eq * math.sqrt(math.pi))])
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [50.0, 0.0]])  # a 2-point cluster + an outlier
    fp = poi_distribution_features(
        xy,
        np.zeros(3, np.int64),
        np.zeros(3, np.int64),
        np.zeros((1, 2)),
        shapely.area(region),
        1,
        eps=0.05,
        min_pts=2,
    )
    centre = (0.005 + 0.5) / 2  # mean of the two cluster centres (not of the 3 points)
    assert fp[0, 0] == pytest.approx(max(centre, 0.5 - centre))
    assert fp[0, 1] == pytest.approx(3 / (math.pi * r_eq**2 / 1e4))  # POIs per hectare


def test_road_features_length_and_intersections():
    regions = np.array([box(0, 0, 100, 100), box(200, 0, 300, 100)])
    roads = np.array(
        [
            LineString([(-50, 50), (50, 50), (150, 50)]),  # passes through the crossing node
            LineString([(50, -50), (50, 50)]),  # two ways ending on it: degree 4
            LineString([(50, 50), (50, 150)]),
            LineString([(10, 10), (20, 10)]),  # a corner of degree 2: not a crossing
            LineString([(20, 10), (20, 20)]),
        ]
    )
    fr = road_features(roads, regions, shapely.area(regions))
    assert fr[0] == pytest.approx([100 + 100 + 10 + 10, 1.0])  # per hectare (region = 1 ha)
    assert fr[1].tolist() == [0.0, 0.0]


def test_scale_blocks_neutralizes_units_only():
    f = np.array([[100.0, 1.0, 300.0], [300.0, 3.0, 0.0]])
    out = scale_blocks(f, np.array([0, 1, 0]))  # columns 0 and 2 share a unit
    assert out[:, 1].tolist() == [0.5, 1.5]
    assert np.allclose(out[:, [0, 2]], f[:, [0, 2]] / 175.0)  # one scale for the block
    assert scale_blocks(np.zeros((2, 2)), np.arange(2)).tolist() == [[0, 0], [0, 0]]


# ----------------------------------------------------------------------- modality + objective


def test_dihedral_transforms_are_distinct_and_invertible():
    img = torch.arange(2 * 2 * 1).view(2, 2, 1)
    outs = [dihedral(img, k) for k in range(8)]
    assert torch.equal(outs[0], img)
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    ds = AugmentedImages([img, img + 10], 3)
    assert len(ds) == 8 and torch.equal(ds[5], dihedral(img + 10, 1))


@pytest.fixture(scope="module")
def sate(tiny_city, tmp_path_factory):
    city = City.load(tiny_city)
    cache = FeatureCache(tmp_path_factory.mktemp("satcache"))
    ctx = Context(city, RunConfig(city=tiny_city), cache, torch.device("cpu"), 16, quiet=True)
    sat = SatModality(SatModality.Options(image_size=32))
    sat.prepare(ctx)
    obj = SateObjective(SateObjective.Options(threshold_poi=0.6, threshold_road=0.9))
    model = UrbanModel([sat], [obj], 16)
    obj.prepare(ctx)
    return ctx, sat, obj, model


def test_sat_modality_features_and_cache(sate):
    ctx, sat, _, _ = sate
    n = len(ctx.city.regions)
    assert sat.views == frozenset({View.REGION})
    assert sat.features.shape == (n, 512) and sat.augmented.shape == (n, 4, 512)
    assert bool(sat.has_image.all())
    assert not torch.allclose(sat.features, sat.augmented[:, 0])
    assert sat.region_view(torch.arange(3)).shape == (3, 16)
    again = SatModality(SatModality.Options(image_size=32))
    again.prepare(ctx)
    assert ctx.cache.hits >= 1 and torch.equal(again.augmented, sat.augmented)
    assert "features" not in sat.state_dict()


def test_region_without_tile_gets_zero_features(tiny_city, tmp_path):
    city = City.load(tiny_city)
    city.satellite = city.satellite.iloc[1:].reset_index(drop=True)  # region 0 loses its tile
    ctx = Context(city, RunConfig(city=tiny_city), FeatureCache(tmp_path), "cpu", 8, quiet=True)
    sat = SatModality(SatModality.Options(image_size=16, augmentations=1))
    sat.prepare(ctx)
    assert sat.has_image.tolist() == [False] + [True] * (len(city.regions) - 1)
    assert sat.features[0].abs().sum() == 0 and sat.features[1].abs().sum() > 0


def test_sate_mined_pairs_and_positive_sampling(sate):
    ctx, sat, obj, _model = sate
    fp, fr = obj.region_features(ctx)
    expected = mine_positive_pairs(fp, fr, 0.6, threshold_r=0.9)
    members = [set(obj.members[obj.ptr[r] : obj.ptr[r + 1]].tolist()) for r in range(len(fp))]
    for i, j in expected.tolist():
        assert j in members[i]
    assert sum(map(len, members)) == len(expected) > 0
    with_pos = [r for r in range(len(fp)) if members[r]]
    without = [r for r in range(len(fp)) if not members[r]]
    assert with_pos and without  # both branches are exercised on the tiny city
    regions = torch.tensor(with_pos + without)
    with torch.no_grad():
        pos = obj.positives(regions, torch.Generator().manual_seed(0))
        views = sat.region_view(torch.arange(len(fp)))
        aug = torch.stack(
            [sat.augmented_view(regions, torch.full_like(regions, a)) for a in range(4)]
        )
    for b, r in enumerate(regions.tolist()):
        if members[r]:  # a mined partner's satellite view
            hit = [j for j in members[r] if torch.allclose(pos[b], views[j])]
        else:  # an augmented copy of its own tile
            hit = [a for a in range(4) if torch.allclose(pos[b], aug[a, b])]
        assert hit, r


def test_sate_skips_without_sat(tiny_city, tmp_path):
    city = City.load(tiny_city)
    ctx = Context(city, RunConfig(city=tiny_city), FeatureCache(tmp_path), "cpu", 8)
    obj = SateObjective()
    UrbanModel([], [obj], 8)
    assert obj.skip_reason(ctx.city) == "needs the sat modality"


def test_sate_step_trains_the_sat_head(sate):
    _, _, obj, model = sate
    assert obj.trainable() == [model.modalities["sat"]]
    params = [p for m in obj.trainable() for p in m.parameters()]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    loss = model("sate", torch.arange(obj.num_items()), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
    emb = obj.region_embeddings()
    assert emb.shape == (len(model.modalities["sat"].features), 16)


def test_sate_reports_its_pairs_and_warns_when_most_fall_back(sate, capsys):
    ctx, sat, obj, _model = sate
    stats = obj.stats()
    assert stats["regions"] == len(ctx.city.regions) and stats["pairs"] >= 0
    assert 0 <= stats["with_positive"] <= stats["regions"]
    strict = SateObjective(SateObjective.Options(threshold_poi=1.0, threshold_road=1.0))
    UrbanModel([sat], [strict], 16)
    strict.prepare(ctx)
    err = capsys.readouterr().err
    assert strict.stats()["with_positive"] < stats["regions"] / 2
    assert "L_sate found positives for" in err and "[objective.sate] threshold_poi" in err
