"""Real-city ingestion: PBF reading against a bare read, and polygonization scaling.

    python benchmarks/ingest.py [--quick] [--repeats 3]

1. PBF ingestion on the Porto Alegre extract (tests/data/porto_alegre/poa_osm.pbf):
   ``read_osm`` (the PBF block check, GDAL's OSM driver through pyogrio with mfm's
   osmconf, streamed Arrow batches filtered by tag, POI and road frames) against a *bare
   read* by the same reader in the same run: ``pyogrio.read_arrow`` of the same three
   layers (points, lines, multipolygons) with GDAL's default osmconf, nothing else.
   Rates are OSM features (the rows of those layers) per second; the ratio
   ingestion / bare is the figure (target >= 0.5). Each runs in a fresh process so its
   peak RSS (``ru_maxrss``) is its own; the RSS of a process that only imports the same
   modules is given for reference.
2. Road-network polygonization (``road_regions`` with its defaults) on squares of the
   same extract centred on the city: 3 km, 6 km and 12 km sides (1x, 4x and 16x the
   area); the figure is time(4x) / time(1x) (target <= 5), with 16x / 4x as a check.

3. With ``--tiles N`` (needs ``pip install osmium``, see ``tile_pbf.py``): part 1 again on
   N side-by-side copies of the extract, to see the rates and peak memory at N times
   the file size.

Best of ``--repeats`` (3; 1 with ``--quick``). Writes ``benchmarks/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, table, write_result

PBF = Path(__file__).resolve().parents[1] / "tests" / "data" / "porto_alegre" / "poa_osm.pbf"
CENTRE = (-51.19, -30.04)  # lon, lat of central Porto Alegre
SIDES_KM = (3.0, 6.0, 12.0)
TARGET_READ, TARGET_SCALE = 0.5, 5.0


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


LAYERS = ("points", "lines", "multipolygons")


def _bare(path: str) -> tuple[float, int, float]:
    import warnings

    import pyogrio

    import mfm.cities.from_osm  # noqa: F401 - same imports as the ingestion process

    warnings.simplefilter("ignore", RuntimeWarning)
    t0 = time.perf_counter()
    n = sum(pyogrio.read_arrow(path, layer=layer)[1].num_rows for layer in LAYERS)
    return time.perf_counter() - t0, n, _maxrss_mib()


def _ingest(path: str) -> tuple[float, int, float]:
    from mfm.cities.osm_reader import read_osm

    t0 = time.perf_counter()
    ext = read_osm(path)
    return time.perf_counter() - t0, ext.features, _maxrss_mib()


def _imports_only(path: str) -> tuple[float, int, float]:
    import pyogrio  # noqa: F401

    import mfm.cities.from_osm  # noqa: F401

    return 0.0, 0, _maxrss_mib()


def _in_fresh_process(fn: Any, path: str) -> tuple[float, int, float]:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, (path,))


def _best(fn: Any, path: str, repeats: int) -> tuple[float, int, float]:
    runs = [_in_fresh_process(fn, path) for _ in range(repeats)]
    return min(runs, key=lambda r: r[0])


def _polygonize_times(repeats: int) -> list[dict[str, Any]]:
    import geopandas as gpd
    import shapely

    from mfm.cities.osm_reader import read_osm
    from mfm.cities.regions import SEGMENT_HIGHWAYS, road_regions

    roads = read_osm(PBF).roads
    highway = roads["tags"].map(lambda t: json.loads(t).get("highway"))
    crs = "EPSG:32722"
    centre = gpd.GeoSeries(gpd.points_from_xy([CENTRE[0]], [CENTRE[1]]), crs=4326).to_crs(crs)
    cx, cy = centre.x.iloc[0], centre.y.iloc[0]
    metric = roads.geometry.to_crs(crs)
    rows = []
    for side in SIDES_KM:
        half = side * 500
        box = shapely.box(cx - half, cy - half, cx + half, cy + half)
        keep = metric.intersects(box).to_numpy()
        extent = gpd.GeoSeries([box], crs=crs).to_crs(4326).iloc[0]
        sub, hw = roads[keep], highway[keep]
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            regions = road_regions(sub, hw, crs, extent)
            best = min(best, time.perf_counter() - t0)
        rows.append(
            {
                "side_km": side,
                "roads": int(hw.isin(SEGMENT_HIGHWAYS).sum()),
                "regions": len(regions),
                "seconds": round(best, 4),
            }
        )
    return rows


def _tiled(n: int, repeats: int) -> dict[str, Any]:
    """Bare read and ingestion of ``n`` tiled copies of the extract (a temporary file)."""
    import tempfile

    from tile_pbf import tile

    with tempfile.TemporaryDirectory() as tmp:
        big = str(Path(tmp) / f"poa{n}.osm.pbf")
        tile(str(PBF), big, n)
        t_bare, features, rss_bare = _best(_bare, big, repeats)
        t_ingest, _, rss_ingest = _best(_ingest, big, repeats)
        size = Path(big).stat().st_size
    out = {
        "copies": n,
        "file_mib": round(size / 2**20, 2),
        "features": features,
        "bare_s": round(t_bare, 3),
        "ingest_s": round(t_ingest, 3),
        "bare_features_per_s": round(features / t_bare),
        "ingest_features_per_s": round(features / t_ingest),
        "ratio_ingest_over_bare": round(t_bare / t_ingest, 3),
        "peak_rss_mib": {"bare": round(rss_bare), "ingest": round(rss_ingest)},
    }
    print(f"{n} copies ({out['file_mib']} MiB): {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--tiles", type=int, default=0, help="also read N tiled copies")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    path = str(PBF)

    t_bare, n_elements, rss_bare = _best(_bare, path, repeats)
    t_ingest, n_read, rss_ingest = _best(_ingest, path, repeats)
    _, _, rss_imports = _in_fresh_process(_imports_only, path)
    ratio = t_bare / t_ingest
    read = {
        "file": PBF.name,
        "file_mib": round(PBF.stat().st_size / 2**20, 2),
        "features": n_elements,
        "features_read_by_mfm": n_read,
        "bare_s": round(t_bare, 4),
        "ingest_s": round(t_ingest, 4),
        "bare_features_per_s": round(n_elements / t_bare),
        "ingest_features_per_s": round(n_elements / t_ingest),
        "ratio_ingest_over_bare": round(ratio, 3),
        "peak_rss_mib": {
            "imports_only": round(rss_imports),
            "bare": round(rss_bare),
            "ingest": round(rss_ingest),
        },
        "target": f">= {TARGET_READ}",
    }
    if args.tiles:
        read["tiled"] = _tiled(args.tiles, repeats)
    poly = _polygonize_times(repeats)
    t = {r["side_km"]: r["seconds"] for r in poly}
    scale = {
        "rows": poly,
        "ratio_4x": round(t[SIDES_KM[1]] / t[SIDES_KM[0]], 2),
        "ratio_16x_over_4x": round(t[SIDES_KM[2]] / t[SIDES_KM[1]], 2),
        "target": f"<= {TARGET_SCALE}",
    }
    print(
        table(
            ["reader", "seconds", "features/s", "peak RSS MiB"],
            [
                ["bare pyogrio read", t_bare, round(n_elements / t_bare), round(rss_bare)],
                ["mfm read_osm", t_ingest, round(n_elements / t_ingest), round(rss_ingest)],
            ],
        )
    )
    print(f"ingestion / bare = {ratio:.2f} (target >= {TARGET_READ})\n")
    print(table(["side km", "roads", "regions", "seconds"], [list(r.values()) for r in poly]))
    print(f"time 4x area / 1x = {scale['ratio_4x']} (target <= {TARGET_SCALE})")
    path_out = write_result("ingest", {"machine": machine(), "read": read, "polygonize": scale})
    print(f"wrote {path_out}")


if __name__ == "__main__":
    main()
