"""How graph building and pair mining scale: time at 4N / time at N, one run.

    python benchmarks/scaling.py [--size small|medium] [--quick] [--repeats 3]

Inputs are synthetic and seeded, at the density of the medium synthetic city (measured:
~660 POIs/km2, ~250 street-view points/km2, ~10.5 km of road per km2 in ~190 m
segments, ~200 m blocks), so growing N by 4 grows the area by 4 and keeps every
neighbourhood the same size: an O(N log N) step should show a ratio a little above 4.

- LOCAL graph: ``radius_neighbours(xy, xy, 1000 m, 16, exclude_self=True)`` on POI-like
  points (half uniform, half in 100 m Gaussian clusters), as ``LocalObjective.prepare``
  calls it; also with the ``padded`` step it does next.
- region adjacency: ``polygon_adjacency`` on a grid of 200 m square blocks.
- sat pair mining: ``mine_positive_pairs(fp [N, 64], fr [N, 2])`` with the sate
  objective's defaults (thresholds 0.95, block 1024, no cap); features are noisy copies
  of N/16 prototypes, so each region has a constant expected number of positives. Also
  the dense all-pairs reference ``_mine_pairs_dense`` (the miner before the ball tree) on
  the same data, and, unless ``--quick``, one run of the miner at 64k regions
  (``PAIRS_LARGE``; time and pair count, ``pairs_large`` in the JSON).
- POI -> road: ``nearest_line`` on a street grid of 190 m segments.
- svi POI linking: ``link_pois(poi_xy, svi_xy, 1000 m, 16)`` (the svi plugin's defaults),
  street-view points sampled along the streets.

``--size medium`` (default): N = 16k / 64k points and 1k / 4k regions; ``small``: a
quarter of that. Best of ``--repeats`` (3) after one warm-up. The target is a ratio
<= 5. Writes ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import shapely
from _common import best_of, machine, parse_args, result_name, table, write_result

TARGET = 5.0
POI_PER_KM2 = 660.0
SVI_PER_KM2 = 250.0
STREET_SPACING = 190.0  # metres between parallel streets, and segment length
BLOCK = 200.0  # metres, side of a region
PAIRS_LARGE = 65_536  # regions of the single large pair-mining run


def side_for(n: int, per_km2: float) -> float:
    """Side (metres) of the square that holds ``n`` points at ``per_km2``."""
    return float(np.sqrt(n / per_km2) * 1000.0)


def poi_points(n: int, side: float, rng: np.random.Generator) -> np.ndarray:
    """Half uniform, half in Gaussian clusters (sigma 100 m, ~8 clusters per km2)."""
    n_uni = n // 2
    n_clusters = max(1, int(8 * (side / 1000.0) ** 2))
    centres = rng.uniform(0, side, (n_clusters, 2))
    members = centres[rng.integers(0, n_clusters, n - n_uni)] + rng.normal(0, 100, (n - n_uni, 2))
    return np.concatenate([rng.uniform(0, side, (n_uni, 2)), np.clip(members, 0, side)])


def street_grid(side: float) -> np.ndarray:
    """Street segments (LineStrings) of a grid with ``STREET_SPACING`` over the square."""
    ticks = np.arange(0.0, side + 1e-9, STREET_SPACING)
    a, b = np.meshgrid(ticks, ticks[:-1], indexing="ij")  # line position, segment start
    a, b = a.ravel(), b.ravel()
    horiz = np.stack([np.stack([b, a], 1), np.stack([b + STREET_SPACING, a], 1)], 1)
    vert = np.stack([np.stack([a, b], 1), np.stack([a, b + STREET_SPACING], 1)], 1)
    return shapely.linestrings(np.concatenate([horiz, vert]))


def street_points(n: int, side: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` points on the street grid (street-view sampling points)."""
    ticks = np.arange(0.0, side + 1e-9, STREET_SPACING)
    on = rng.choice(ticks, n)
    along = rng.uniform(0, side, n)
    horiz = rng.random(n) < 0.5
    return np.where(horiz[:, None], np.stack([along, on], 1), np.stack([on, along], 1))


def block_grid(n: int) -> np.ndarray:
    """A ``sqrt(n) x sqrt(n)`` grid of square regions (``n`` must be a square)."""
    k = round(np.sqrt(n))
    x, y = np.meshgrid(np.arange(k) * BLOCK, np.arange(k) * BLOCK)
    return shapely.box(x.ravel(), y.ravel(), x.ravel() + BLOCK, y.ravel() + BLOCK)


def region_features(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative ``fp [n, 64]`` and ``fr [n, 2]``: noisy copies of ``n / 16`` prototypes."""
    protos = max(1, n // 16)
    cls = rng.integers(0, protos, n)
    fp = np.abs(rng.gamma(0.5, 1.0, (protos, 64))[cls] + rng.normal(0, 0.03, (n, 64)))
    fr = np.abs(rng.uniform(0.5, 2.0, (protos, 2))[cls] + rng.normal(0, 0.02, (n, 2)))
    return fp, fr


def cases(n_points: int, n_regions: int, seed: int) -> dict[str, tuple[Callable[[], Any], str]]:
    """The timed callables at one size, with a note of the input size."""
    from mfm.core.graphs import nearest_line, polygon_adjacency, radius_neighbours
    from mfm.plugins.sat.features import _mine_pairs_dense, mine_positive_pairs
    from mfm.plugins.sat.objective import SateOptions
    from mfm.plugins.svi.modality import SviOptions, link_pois
    from mfm.scales.local import LocalOptions

    rng = np.random.default_rng(seed)
    lo, sv, so = LocalOptions(), SviOptions(), SateOptions()
    side = side_for(n_points, POI_PER_KM2)
    xy = poi_points(n_points, side, rng)
    roads = street_grid(side)
    n_svi = round(n_points * SVI_PER_KM2 / POI_PER_KM2)
    svi_xy = street_points(n_svi, side, rng)
    polys = block_grid(n_regions)
    fp, fr = region_features(n_regions, rng)
    area = f"{(side / 1000) ** 2:.0f} km2"

    def local_graph() -> Any:
        nb = radius_neighbours(xy, xy, lo.max_dist, lo.max_neighbours, exclude_self=True)
        return nb.padded(np.arange(len(xy)), max(1, int(nb.counts().max(initial=0))))

    return {
        "radius_neighbours (LOCAL)": (
            lambda: radius_neighbours(xy, xy, lo.max_dist, lo.max_neighbours, exclude_self=True),
            f"{n_points} POIs, {area}",
        ),
        "LOCAL graph (+ padded)": (local_graph, f"{n_points} POIs"),
        "polygon_adjacency": (lambda: polygon_adjacency(polys), f"{len(polys)} blocks"),
        "mine_positive_pairs (sat)": (
            lambda: mine_positive_pairs(
                fp, fr, so.threshold_poi, so.block, so.threshold_road, so.max_positives
            ),
            f"{n_regions} regions x 64",
        ),
        "mine pairs, dense reference (sat)": (
            lambda: _mine_pairs_dense(
                fp, fr, so.threshold_poi, so.block, so.threshold_road, so.max_positives
            ),
            f"{n_regions} regions x 64",
        ),
        "nearest_line (POI->road)": (
            lambda: nearest_line(xy, roads),
            f"{n_points} POIs, {len(roads)} segments",
        ),
        "link_pois (svi)": (
            lambda: link_pois(xy, svi_xy, sv.max_dist, sv.max_groups),
            f"{n_points} POIs, {n_svi} svi",
        ),
    }


def large_pairs(n_regions: int, seed: int) -> dict[str, Any]:
    """One timed run of the pair miner at ``n_regions`` (no dense reference: too slow)."""
    from mfm.plugins.sat.features import mine_positive_pairs
    from mfm.plugins.sat.objective import SateOptions

    so = SateOptions()
    fp, fr = region_features(n_regions, np.random.default_rng(seed))
    seconds, pairs = best_of(
        lambda: mine_positive_pairs(
            fp, fr, so.threshold_poi, so.block, so.threshold_road, so.max_positives
        ),
        1,
        warmup=False,
    )
    return {"regions": n_regions, "dims": fp.shape[1], "seconds": seconds, "pairs": len(pairs)}


def _size(name: str, out: Any) -> int | None:
    """Output size, to show that 4N really did 4x the work (pairs, edges, ...)."""
    if name.startswith("radius"):
        return len(out.index)
    if name.startswith("mine") or name.startswith("polygon"):
        return len(out)
    if name.startswith("link"):
        return int(out.mask.sum())
    return None


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], default_size="medium")
    repeats = args.repeats or (1 if args.quick else 3)
    base_points, base_regions = (16_384, 1_024) if args.size == "medium" else (4_096, 256)
    before = machine()
    small = cases(base_points, base_regions, seed=0)
    large = cases(4 * base_points, 4 * base_regions, seed=1)
    rows = []
    for name in small:
        t1, out1 = best_of(small[name][0], repeats)
        t4, out4 = best_of(large[name][0], repeats)
        rows.append(
            {
                "step": name,
                "input_n": small[name][1],
                "input_4n": large[name][1],
                "seconds_n": t1,
                "seconds_4n": t4,
                "ratio": t4 / t1,
                "output_n": _size(name, out1),
                "output_4n": _size(name, out4),
                "meets_target": t4 / t1 <= TARGET,
            }
        )
        print(f"  {name}: {t1:.4f} s -> {t4:.4f} s ({t4 / t1:.2f}x)", flush=True)
    pairs_large = None
    if not args.quick:
        pairs_large = large_pairs(PAIRS_LARGE, seed=2)
        print(
            f"  mine_positive_pairs at {PAIRS_LARGE} regions: "
            f"{pairs_large['seconds']:.2f} s, {pairs_large['pairs']} pairs",
            flush=True,
        )
    after = machine()
    payload = {
        "benchmark": "scaling",
        "size": args.size,
        "repeats": repeats,
        "target": TARGET,
        "density": {
            "poi_per_km2": POI_PER_KM2,
            "svi_per_km2": SVI_PER_KM2,
            "street_spacing_m": STREET_SPACING,
            "block_m": BLOCK,
        },
        "machine_before": before,
        "machine_after": after,
        "results": rows,
        "pairs_large": pairs_large,
    }
    path = write_result(result_name("scaling", args.threads), payload)
    print(
        f"scaling ({args.size}), best of {repeats}; "
        f"load avg {before['loadavg']} -> {after['loadavg']}"
    )
    print(
        table(
            [
                "step",
                "N",
                "4N",
                "s at N",
                "s at 4N",
                f"ratio (target <= {TARGET:g})",
                "out N -> 4N",
            ],
            [
                [
                    r["step"],
                    r["input_n"],
                    r["input_4n"],
                    r["seconds_n"],
                    r["seconds_4n"],
                    r["ratio"],
                    f"{r['output_n']} -> {r['output_4n']}" if r["output_n"] is not None else "-",
                ]
                for r in rows
            ],
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
