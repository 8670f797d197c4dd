import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import Polygon, box

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig
from mfm.core.errors import MfmError
from mfm.core.losses import info_nce
from mfm.core.modality import Context, View
from mfm.plugins.polygon.modality import PolygonModality, footprint_features
from mfm.plugins.polygon.raster import MaskImages, rasterize_footprints

L_SHAPE = Polygon([(0, 0), (30, 0), (30, 10), (10, 10), (10, 40), (0, 40)])


def _reference(geom, size: int) -> np.ndarray:
    """Pixel-centre inside test with shapely, same fitting as the rasterizer."""
    minx, miny, maxx, maxy = geom.bounds
    w, h = maxx - minx, maxy - miny
    scale = size / max(w, h)
    off_x, off_y = (size - w * scale) / 2, (size - h * scale) / 2
    j, i = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    x = minx + (j - off_x) / scale
    y = maxy - (i - off_y) / scale
    return shapely.contains_xy(geom, x, y).astype(np.uint8)


def test_raster_fits_bbox_keeps_aspect_and_centres():
    mask = rasterize_footprints(np.array([box(0, 0, 40, 10)]), 32)[0]
    rows = np.flatnonzero(mask.any(1))
    assert mask[rows].all()  # the long side fills the full width
    assert rows.tolist() == list(range(12, 20))  # 32 * 10 / 40 = 8 rows, centred


def test_raster_equals_shapely_pixel_centre_test_and_keeps_holes():
    ring = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(3, 3), (7, 3), (7, 7), (3, 7)]])
    two = shapely.MultiPolygon([box(0, 0, 3, 3), box(5, 5, 9, 8)])
    rotated = shapely.affinity.rotate(L_SHAPE, 33.0)
    geoms = np.array([L_SHAPE, ring, two, rotated])
    masks = rasterize_footprints(geoms, 32)
    for mask, geom in zip(masks, geoms, strict=True):
        assert np.array_equal(mask, _reference(geom, 32))
    assert masks[1][16, 16] == 0 and masks[1][1, 1] == 1  # the hole stays empty


def test_raster_depends_on_shape_not_position_or_size(monkeypatch):
    moved = shapely.affinity.translate(L_SHAPE, 5000.0, -300.0)
    bigger = shapely.affinity.scale(L_SHAPE, 3.0, 3.0)
    other = box(0, 0, 10, 10)
    m = rasterize_footprints(np.array([L_SHAPE, moved, bigger, other]), 24)
    assert np.array_equal(m[0], m[1]) and np.array_equal(m[0], m[2])
    assert not np.array_equal(m[0], m[3])
    # footprints split across several chunks give the same per-footprint result
    monkeypatch.setattr("mfm.plugins.polygon.raster._CELLS_PER_CHUNK", 3 * 24 * 25)
    many = rasterize_footprints(np.array([L_SHAPE, other] * 5), 24)
    assert np.array_equal(many[::2], np.repeat(m[:1], 5, 0))
    assert np.array_equal(many[1::2], np.repeat(m[3:], 5, 0))


def test_mask_images_are_three_channel_uint8():
    img = MaskImages(rasterize_footprints(np.array([L_SHAPE]), 16))[0]
    assert img.shape == (16, 16, 3) and img.dtype == torch.uint8
    assert set(img.unique().tolist()) == {0, 255}


def test_footprint_features_area_ratio_and_mask():
    geoms = np.array([box(0, 0, 10, 10), None, box(0, 0, 20, 20)], dtype=object)
    out = footprint_features(geoms, 16, "none", quiet=True)
    assert out["has_footprint"].tolist() == [True, False, True]
    assert torch.allclose(out["area"], torch.tensor([0.25, 0.0, 1.0]))
    assert out["features"][1].abs().sum() == 0 and out["features"][0].abs().sum() > 0


@pytest.fixture(scope="module")
def prepared(tiny_city, tmp_path_factory):
    city = City.load(tiny_city)
    cache = FeatureCache(tmp_path_factory.mktemp("polycache"))
    ctx = Context(city, RunConfig(city=tiny_city), cache, torch.device("cpu"), 16, quiet=True)
    mod = PolygonModality(PolygonModality.Options(image_size=32))
    mod.prepare(ctx)
    return city, ctx, mod


def test_modality_views_mask_and_cache(prepared):
    city, ctx, mod = prepared
    assert mod.views == frozenset({View.POI}) and mod.layers == ("pois",)
    has = torch.tensor(city.pois["footprint"].notna().to_numpy())
    idx = torch.arange(len(city.pois))
    view = mod.poi_view(idx)
    assert view.emb.shape == (len(city.pois), 16)
    assert torch.equal(view.mask, has) and 0 < int(has.sum()) < len(has)
    assert view.emb[~has].abs().sum() == 0 and view.emb[has].abs().sum() > 0
    assert mod.area.max() == pytest.approx(1.0)
    again = PolygonModality(PolygonModality.Options(image_size=32))
    again.prepare(ctx)
    assert ctx.cache.hits == 1 and torch.equal(again.features, mod.features)
    assert "features" not in mod.state_dict()  # frozen features are not checkpointed


def test_city_without_footprints_is_a_clear_error(tiny_city, tmp_path):
    city = City.load(tiny_city)
    city.pois = city.pois.drop(columns="footprint")
    ctx = Context(city, RunConfig(city=tiny_city), FeatureCache(tmp_path), "cpu", 8, quiet=True)
    with pytest.raises(MfmError, match="drop the polygon plugin"):
        PolygonModality(PolygonModality.Options(image_size=16)).prepare(ctx)


def test_head_trains_through_the_view(prepared):
    city, _, mod = prepared
    rows = torch.as_tensor(np.flatnonzero(city.pois["footprint"].notna().to_numpy()))[:32]
    target = torch.randn(len(rows), 16, generator=torch.Generator().manual_seed(0))
    params = list(mod.parameters())
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = info_nce(mod.poi_view(rows).emb, target)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
