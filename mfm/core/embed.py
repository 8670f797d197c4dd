"""Embedding export (GeoParquet with a fixed-size float32 list column) and the run manifest.

Beside the ``embedding`` list column every file carries plain numeric ``pc1``, ``pc2``,
``pc3`` (principal components) and ``cluster`` (KMeans) columns, which GIS tools such as
QGIS can style directly (they cannot read a list column).
"""

from __future__ import annotations

import io
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mfm.core import atomic
from mfm.core.constants import EMBEDDING

GIS_COLUMNS = ("pc1", "pc2", "pc3", "cluster")
"""Plain numeric columns written next to ``embedding`` (summaries, never features)."""
KMEANS_FIT_MAX = 50_000
"""Above this many rows KMeans is fitted on a seeded sample of :data:`KMEANS_SAMPLE`."""
KMEANS_SAMPLE = 20_000


def _vectors(emb: np.ndarray, rows: int) -> pa.FixedSizeListArray:
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != rows:
        raise ValueError(f"embeddings {emb.shape} do not match {rows} rows")
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])


def principal_components(emb: np.ndarray, k: int = 3) -> np.ndarray:
    """Scores ``[N, k]`` on the first ``k`` principal components of ``emb [N, d]``.

    Eigenvectors of the ``d x d`` covariance (cheap for any ``N``), each signed so that its
    largest-magnitude loading is positive (deterministic); components beyond the rank of
    ``emb`` score 0.
    """
    x = np.asarray(emb, dtype=np.float64)
    out = np.zeros((len(x), k))
    if len(x) < 2 or x.ndim != 2 or x.shape[1] == 0:
        return out
    x = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(x.T @ x)
    order = np.argsort(values)[::-1][: min(k, x.shape[1])]
    vectors = vectors[:, order]
    top = np.abs(vectors).argmax(axis=0)
    vectors = vectors * np.sign(vectors[top, np.arange(vectors.shape[1])])
    keep = values[order] > 1e-12 * max(float(values.max()), 1e-300)
    out[:, : len(order)] = (x @ vectors) * keep
    return out


def kmeans_clusters(emb: np.ndarray, max_k: int = 8) -> np.ndarray:
    """KMeans cluster of every row of ``emb``: ``k = min(max_k, N // 10)``, at least 2 when
    there are 2 distinct rows (else all 0); ``random_state=0``, ``n_init=2``,
    ``max_iter=100`` (a styling aid, not an analysis: cheap beats converged); above
    :data:`KMEANS_FIT_MAX` rows fitted on a seeded sample, then every row predicted."""
    from sklearn.cluster import KMeans

    x = np.asarray(emb, dtype=np.float32)
    fit = x
    if len(x) > KMEANS_FIT_MAX:
        rows = np.random.default_rng(0).choice(len(x), KMEANS_SAMPLE, replace=False)
        fit = x[np.sort(rows)]
    distinct = len(np.unique(fit, axis=0)) if len(fit) else 0
    k = min(max(2, min(max_k, len(x) // 10)), distinct)
    if k < 2:
        return np.zeros(len(x), dtype=np.int32)
    model = KMeans(n_clusters=k, random_state=0, n_init=2, max_iter=100).fit(fit)
    return model.predict(x).astype(np.int32)


def gis_columns(emb: np.ndarray) -> dict[str, np.ndarray]:
    """``pc1``, ``pc2``, ``pc3`` (:func:`principal_components`) and ``cluster``
    (:func:`kmeans_clusters`) of ``emb``: plain numeric columns GIS tools can style.

    Rows holding a non-finite value are left out of both (NaN scores, cluster -1).
    """
    x = np.asarray(emb, dtype=np.float32)
    ok = np.isfinite(x).all(axis=1)
    pcs = np.full((len(x), 3), np.nan, dtype=np.float32)
    pcs[ok] = principal_components(x[ok], 3)
    cluster = np.full(len(x), -1, dtype=np.int32)
    cluster[ok] = kmeans_clusters(x[ok])
    cols: dict[str, np.ndarray] = {f"pc{i + 1}": pcs[:, i] for i in range(3)}
    cols["cluster"] = cluster
    return cols


def embeddings_table(
    frame: gpd.GeoDataFrame, emb: np.ndarray, extra: dict[str, np.ndarray] | None = None
) -> pa.Table:
    """GeoParquet-ready Arrow table of ``frame`` plus :func:`gis_columns`, ``embedding``
    (fixed_size_list<float32>) and optional further vector columns (e.g. ``local_embedding``).
    """
    vectors = _vectors(emb, len(frame))
    frame = frame.drop(columns=[c for c in GIS_COLUMNS if c in frame.columns])
    frame = frame.assign(**gis_columns(emb))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)  # geopandas writes the GeoParquet "geo" metadata
    table = pq.read_table(pa.BufferReader(buffer.getvalue()))
    table = table.append_column(EMBEDDING, vectors)
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
    """Read a file written by ``write_embeddings``: (frame without the ``embedding`` column,
    ``[N, d]``); the frame keeps the :data:`GIS_COLUMNS`."""
    frame = gpd.read_parquet(path)
    emb = np.stack(frame.pop(EMBEDDING).to_numpy()).astype(np.float32)
    return frame, emb


write_json = atomic.write_json  # re-exported: eval and cities write JSON through it
