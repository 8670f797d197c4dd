"""The GIS columns of the embedding files: pc1..pc3 (signed PCA) and cluster (KMeans)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from shapely.geometry import Point

from mfm.core import embed
from mfm.core.embed import (
    GIS_COLUMNS,
    gis_columns,
    kmeans_clusters,
    principal_components,
    read_embeddings,
    write_embeddings,
)


def _blobs(n: int, k: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 10 * rng.standard_normal((k, d))
    return (centres[np.arange(n) % k] + rng.standard_normal((n, d))).astype(np.float32)


def test_principal_components_are_pca_with_a_fixed_sign():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(0).standard_normal((200, 6)) * np.arange(6, 0, -1)
    pcs = principal_components(x)
    ref = PCA(3).fit(x)
    assert np.allclose(np.abs(pcs), np.abs(ref.transform(x)), atol=1e-6)
    # the sign: every component's largest-magnitude loading is positive
    v = np.linalg.lstsq(x - x.mean(axis=0), pcs, rcond=None)[0]  # [d, 3] loadings
    assert (v[np.abs(v).argmax(axis=0), np.arange(3)] > 0).all()
    assert np.array_equal(pcs, principal_components(x.copy()))
    assert np.all(np.diff(pcs.var(axis=0)) < 0)


def test_principal_components_of_degenerate_input_are_zero():
    assert np.array_equal(principal_components(np.ones((1, 4))), np.zeros((1, 3)))
    flat = principal_components(np.c_[np.arange(10.0), 2 * np.arange(10.0)])  # rank 1, d 2
    assert np.abs(flat[:, 0]).max() > 1 and np.allclose(flat[:, 1:], 0)
    assert np.allclose(principal_components(np.ones((5, 8))), 0)


def test_kmeans_k_rule_and_determinism():
    assert kmeans_clusters(_blobs(25, 3)).max() == 1  # k = max(2, 25 // 10) = 2
    many = kmeans_clusters(_blobs(400, 8))
    assert len(np.unique(many)) == 8  # k = min(8, 40)
    assert np.array_equal(many, kmeans_clusters(_blobs(400, 8)))
    assert np.array_equal(kmeans_clusters(np.ones((30, 4))), np.zeros(30))  # one distinct row
    assert np.array_equal(kmeans_clusters(np.ones((1, 4))), [0])


def test_kmeans_on_many_rows_fits_a_sample(monkeypatch):
    monkeypatch.setattr(embed, "KMEANS_FIT_MAX", 300)
    monkeypatch.setattr(embed, "KMEANS_SAMPLE", 200)
    x = _blobs(1000, 4)
    got = kmeans_clusters(x, max_k=4)
    assert got.shape == (1000,) and len(np.unique(got)) == 4
    same = np.arange(1000) % 4
    for c in range(4):  # each blob lands in one cluster
        assert len(np.unique(got[same == c])) == 1


def test_non_finite_rows_are_left_out():
    x = _blobs(40, 2)
    x[3, 0] = np.nan
    cols = gis_columns(x)
    assert set(cols) == set(GIS_COLUMNS)
    assert np.isnan(cols["pc1"][3]) and cols["cluster"][3] == -1
    assert (
        np.isfinite(np.delete(cols["pc1"], 3)).all() and (np.delete(cols["cluster"], 3) >= 0).all()
    )


def test_files_carry_plain_gis_columns_and_read_back(tmp_path):
    n = 30
    frame = gpd.GeoDataFrame(
        {"region_id": [f"r{i}" for i in range(n)]},
        geometry=[Point(i, i) for i in range(n)],
        crs="EPSG:4326",
    )
    emb = _blobs(n, 3, d=8)
    path = write_embeddings(tmp_path / "e.parquet", frame, emb, {"local_embedding": emb[:, :4]})
    schema = pq.read_schema(path)
    names = schema.names
    assert names[names.index("embedding") - 4 : names.index("embedding")] == list(GIS_COLUMNS)
    for c in ("pc1", "pc2", "pc3"):
        assert schema.field(c).type == pa.float32()
    assert schema.field("cluster").type == pa.int32()
    back, got = read_embeddings(path)
    assert "embedding" not in back and set(GIS_COLUMNS) <= set(back.columns)
    assert np.array_equal(got, emb)
    assert np.allclose(back["pc1"], principal_components(emb)[:, 0], atol=1e-4)
    # writing a frame that already has the columns replaces them
    again = write_embeddings(tmp_path / "f.parquet", back.drop(columns="local_embedding"), emb)
    assert pq.read_schema(again).names.count("pc1") == 1
