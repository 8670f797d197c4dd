"""The road plugin: descriptors on hand-made lines, and the macro view in a real run."""

import json

import numpy as np
import shapely

from mfm.plugins.road.features import CLASS_NAMES, feature_names, road_class, road_features


def _square(x0: float, y0: float, side: float = 1000.0) -> shapely.Polygon:
    return shapely.box(x0, y0, x0 + side, y0 + side)


def test_road_class_reads_osm_and_other_tag_schemes():
    assert CLASS_NAMES[road_class('{"highway": "primary", "name": "A"}')] == "major"
    assert CLASS_NAMES[road_class({"fclass": "residential"})] == "local"
    assert CLASS_NAMES[road_class({"highway": "footway"})] == "path"
    assert CLASS_NAMES[road_class({"highway": "bus_guideway"})] == "other"
    assert CLASS_NAMES[road_class("{}")] == "other"
    assert CLASS_NAMES[road_class(None)] == "other"


def test_road_features_count_length_crossings_and_orientation():
    # region 0: a noded "+" of two 1 km residential streets; region 1: one diagonal footway
    regions = np.array([_square(0, 0), _square(2000, 0)])
    roads = np.array(
        [
            shapely.LineString([(0, 500), (500, 500), (1000, 500)]),
            shapely.LineString([(500, 0), (500, 500), (500, 1000)]),
            shapely.LineString([(2100, 100), (2900, 900)]),
            shapely.LineString([(5000, 5000), (6000, 5000)]),  # outside every region
        ]
    )
    classes = np.array(
        [road_class({"highway": h}) for h in ("residential",) * 2 + ("footway",) * 2]
    )
    feats = road_features(roads, classes, regions, shapely.area(regions))
    names = feature_names()
    assert feats.shape == (2, len(names))
    col = {n: feats[:, i] for i, n in enumerate(names)}
    raw = {n: np.expm1(v) for n, v in col.items() if n != "orientation_entropy"}
    np.testing.assert_allclose(raw["km_per_km2_local"], [2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(raw["km_per_km2_path"], [0.0, 0.8 * np.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(raw["km_per_km2"], raw["km_per_km2_local"] + raw["km_per_km2_path"])
    np.testing.assert_allclose(raw["crossings_per_km2"], [1.0, 0.0], atol=1e-6)  # the centre
    np.testing.assert_allclose(raw["dead_ends_per_km2"], [4.0, 2.0], atol=1e-6)
    # two perpendicular directions of equal length, then a single direction
    np.testing.assert_allclose(col["orientation_entropy"], [np.log(2) / np.log(18), 0.0], atol=1e-6)


def test_road_features_split_a_road_between_the_regions_it_crosses():
    regions = np.array([_square(0, 0), _square(1000, 0)])
    roads = np.array([shapely.LineString([(500, 500), (1500, 500)])])
    feats = road_features(roads, np.array([road_class({"highway": "primary"})]), regions, [1e6] * 2)
    np.testing.assert_allclose(np.expm1(feats[:, 0]), [0.5, 0.5], atol=1e-6)


def test_road_features_of_a_city_without_roads_in_a_region_are_zero():
    regions = np.array([_square(0, 0)])
    feats = road_features(np.array([], dtype=object), np.zeros(0, int), regions, [1e6])
    assert feats.shape == (1, len(feature_names()))
    assert not feats.any()


def test_road_view_makes_global_align_pois_with_streets(osm_road_run):
    result, out = osm_road_run, osm_road_run.out
    assert set(result.model.modalities) == {"osm", "road"}
    glob = result.model.objectives["global"]
    assert glob.variant == "macro/micro"
    road = result.model.modalities["road"]
    assert road.features.shape[1] == len(feature_names())
    manifest = json.loads((out / "manifest.json").read_text())
    assert "road" in json.dumps(manifest["config"])
