"""Embedding export (GeoParquet with a fixed-size float32 list column) and the run manifest."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mfm.core.constants import EMBEDDING


def embeddings_table(frame: gpd.GeoDataFrame, emb: np.ndarray) -> pa.Table:
    """GeoParquet-ready Arrow table of ``frame`` plus ``embedding`` (fixed_size_list<float32>)."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != len(frame):
        raise ValueError(f"embeddings {emb.shape} do not match {len(frame)} rows")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)  # geopandas writes the GeoParquet "geo" metadata
    table = pq.read_table(pa.BufferReader(buffer.getvalue()))
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    return table.append_column(EMBEDDING, column)


def write_embeddings(path: Path, frame: gpd.GeoDataFrame, emb: np.ndarray) -> Path:
    """Write atomically: a temporary name first, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(embeddings_table(frame, emb), tmp)
    os.replace(tmp, path)
    return path


def read_embeddings(path: Path) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Read a file written by ``write_embeddings``: (frame without the column, ``[N, d]``)."""
    frame = gpd.read_parquet(path)
    emb = np.stack(frame.pop(EMBEDDING).to_numpy()).astype(np.float32)
    return frame, emb


def write_json(path: Path, data: object) -> Path:
    """Write JSON atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path
