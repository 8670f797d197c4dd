"""Embedding export (GeoParquet with a fixed-size float32 list column) and the run manifest."""

from __future__ import annotations

import io
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mfm.core import atomic
from mfm.core.constants import EMBEDDING


def _vectors(emb: np.ndarray, rows: int) -> pa.FixedSizeListArray:
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != rows:
        raise ValueError(f"embeddings {emb.shape} do not match {rows} rows")
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])


def embeddings_table(
    frame: gpd.GeoDataFrame, emb: np.ndarray, extra: dict[str, np.ndarray] | None = None
) -> pa.Table:
    """GeoParquet-ready Arrow table of ``frame`` plus ``embedding`` (fixed_size_list<float32>)
    and optional further vector columns (e.g. ``local_embedding``)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)  # geopandas writes the GeoParquet "geo" metadata
    table = pq.read_table(pa.BufferReader(buffer.getvalue()))
    table = table.append_column(EMBEDDING, _vectors(emb, len(frame)))
    for name, values in (extra or {}).items():
        table = table.append_column(name, _vectors(values, len(frame)))
    return table


def write_embeddings(
    path: Path,
    frame: gpd.GeoDataFrame,
    emb: np.ndarray,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write the GeoParquet table atomically."""
    with atomic.atomic_path(path) as tmp:
        pq.write_table(embeddings_table(frame, emb, extra), tmp)
    return path


def read_embeddings(path: Path) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Read a file written by ``write_embeddings``: (frame without the column, ``[N, d]``)."""
    frame = gpd.read_parquet(path)
    emb = np.stack(frame.pop(EMBEDDING).to_numpy()).astype(np.float32)
    return frame, emb


write_json = atomic.write_json  # re-exported: eval and cities write JSON through it
