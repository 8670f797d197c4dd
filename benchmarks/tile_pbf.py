"""Make a bigger OSM extract by repeating one side by side: ingestion at scale, offline.

    pip install osmium==4.3.2   # benchmark-only; mfm itself reads with GDAL
    python benchmarks/tile_pbf.py tests/data/porto_alegre/poa_osm.pbf /tmp/poa16.osm.pbf 16

Copy k of N is shifted by (0.2 * (k % 8), 0.2 * (k // 8)) degrees and its node, way and
relation ids by k * 10**10, so the copies do not touch and the output is a valid PBF
(nodes, then ways, then relations) with N times the elements of the input.
"""

from __future__ import annotations

import sys

STEP_DEG = 0.2
ID_STRIDE = 10**10


def tile(src: str, dst: str, n: int) -> None:
    """Write ``n`` shifted copies of ``src`` into ``dst``."""
    import osmium

    with osmium.SimpleWriter(dst, overwrite=True) as out:
        for kind in ("n", "w", "r"):
            for k in range(n):
                dx, dy, shift = STEP_DEG * (k % 8), STEP_DEG * (k // 8), k * ID_STRIDE
                for obj in osmium.FileProcessor(src):
                    if obj.type_str() != kind:
                        continue
                    if kind == "n":
                        loc = obj.location
                        if loc.valid():
                            loc = osmium.osm.Location(loc.lon + dx, loc.lat + dy)
                        out.add_node(obj.replace(id=obj.id + shift, location=loc))
                    elif kind == "w":
                        refs = [nd.ref + shift for nd in obj.nodes]
                        out.add_way(obj.replace(id=obj.id + shift, nodes=refs))
                    else:
                        members = [(m.type, m.ref + shift, m.role) for m in obj.members]
                        out.add_relation(obj.replace(id=obj.id + shift, members=members))


if __name__ == "__main__":
    tile(sys.argv[1], sys.argv[2], int(sys.argv[3]))
