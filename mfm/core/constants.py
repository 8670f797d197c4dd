"""Names shared across the package: bundle layers, columns, file names."""

from __future__ import annotations

WGS84 = "EPSG:4326"
CITY_MANIFEST = "city.toml"

POI_ID = "poi_id"
ROAD_ID = "road_id"
REGION_ID = "region_id"
SVI_ID = "svi_id"
TRAJ_ID = "traj_id"
GEOMETRY = "geometry"
FOOTPRINT = "footprint"
TAGS = "tags"
EMBEDDING = "embedding"

LAYERS = ("pois", "roads", "regions", "svi", "satellite", "trajectories", "od")
OD_COLUMNS = ("origin", "destination", "count")
"""The ``od`` layer: trips (or flow counts) from one region to another (region ids)."""
SVI_DIRECTIONS = ("east", "south", "west", "north")

POI_EMBEDDINGS = "poi_embeddings.parquet"
REGION_EMBEDDINGS = "region_embeddings.parquet"
RUN_MANIFEST = "manifest.json"

# labelled tasks (city.toml [labels.*]): level -> id column and layer, kind -> CSV column
LEVEL_ID = {"region": REGION_ID, "poi": POI_ID}
LEVEL_LAYER = {"region": "regions", "poi": "pois"}
KIND_TARGET = {"regression": "value", "classification": "label"}
