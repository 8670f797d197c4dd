"""Baseline features probed on the same splits as the mfm embeddings.

- ``counts``: POI-category counts per region, tf-idf weighted (POI level: one-hot of the
  POI's own category). The category of a POI is ``key=value`` for the first of
  :data:`CATEGORY_KEYS` (in that order) that its tags carry.
- ``text``: mean of the frozen text-encoder embeddings of the region's POIs, the paper's
  "BERT" comparison (POI level: the POI's own). They come from the feature cache under the
  key the osm plugin uses, so nothing is re-encoded after a run.
- ``random``: seeded Gaussian vectors as wide as the mfm embedding (the floor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer

from mfm.core.cache import FeatureCache
from mfm.core.city import City
from mfm.core.graphs import region_mean

BASELINES: tuple[str, ...] = ("counts", "text", "random")
CATEGORY_KEYS = ("amenity", "shop", "office", "leisure", "tourism", "building", "landuse")


def poi_categories(tags: list[dict[str, str]]) -> np.ndarray:
    """``key=value`` of the first :data:`CATEGORY_KEYS` key in each POI's tags ("" if none)."""
    out = []
    for t in tags:
        key = next((k for k in CATEGORY_KEYS if k in t), None)
        out.append(f"{key}={t[key]}" if key is not None else "")
    return np.array(out, dtype=object)


def category_matrix(categories: np.ndarray, rows: np.ndarray, n_rows: int) -> sp.csr_matrix:
    """Sparse counts ``[n_rows, C]``: POI ``i`` adds 1 to ``(rows[i], its category)``.

    POIs without a category or with ``rows[i] < 0`` add nothing.
    """
    vocab, col = np.unique(categories.astype(str), return_inverse=True)
    keep = (rows >= 0) & (vocab[col] != "")
    data = np.ones(int(keep.sum()))
    return sp.csr_matrix((data, (rows[keep], col[keep])), shape=(n_rows, len(vocab)))


def counts_features(city: City, level: str) -> np.ndarray:
    """Region: tf-idf of category counts ``[R, C]``; POI: one-hot category ``[P, C]``."""
    cats = poi_categories(city.poi_tags())
    if level == "poi":
        return category_matrix(cats, np.arange(len(cats)), len(cats)).toarray()
    counts = category_matrix(cats, city.poi_region(), len(city.regions))
    return TfidfTransformer().fit_transform(counts).toarray()


def poi_text_features(
    city: City, options: Mapping[str, Any], cache: FeatureCache, quiet: bool = True
) -> np.ndarray:
    """Frozen text embeddings of every POI ``[P, h]`` with the run's osm text options."""
    import torch

    from mfm.core.text import TextOptions
    from mfm.core.text import poi_text_features as encode

    fields = TextOptions.model_fields
    opts = TextOptions.model_validate({k: v for k, v in dict(options).items() if k in fields})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return encode(city, opts, cache, device, quiet).numpy()


def text_features(
    city: City, level: str, options: Mapping[str, Any], cache: FeatureCache
) -> np.ndarray:
    """POI: its own text embedding; region: the mean over its POIs."""
    feats = poi_text_features(city, options, cache)
    if level == "poi":
        return feats
    return region_mean(feats, city.poi_region(), len(city.regions))


def random_features(n: int, dim: int, seed: int) -> np.ndarray:
    """Seeded standard Gaussian vectors ``[n, dim]``."""
    return np.random.default_rng(seed).standard_normal((n, dim))
