"""Baseline features probed on the same splits as the mfm embeddings.

- ``raw``: the run's own frozen input features (standardized, concatenated, aggregated
  as the exported embedding is), written by ``mfm run`` into ``baselines.npz``.
- ``untrained``: the same model and export path at its initialization (no step taken).
- ``counts``: tf-idf of the counts of every ``key=value`` tag pair of the region's POIs
  (any key: ``amenity``, ``fclass``, ``category`` ...; identifiers such as names and
  addresses excluded, at most :data:`MAX_PAIRS` most frequent pairs), plus log POI count,
  log POIs per km² and log area of the region (POI level: the POI's own pairs).
- ``text``: mean of the frozen text-encoder embeddings of the region's POIs, the paper's
  "BERT" comparison (POI level: the POI's own). They come from the feature cache under the
  key the osm plugin uses, so nothing is re-encoded after a run.
- ``random``: seeded Gaussian vectors as wide as the mfm embedding (the floor).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.export import BASELINE_FILE
from mfm.core.graphs import region_mean

REFERENCES: tuple[str, ...] = ("raw", "untrained")
"""Baselines that a run writes (``baselines.npz``): what the model was given and its init."""
BASELINES: tuple[str, ...] = (*REFERENCES, "counts", "text", "random")
MAX_PAIRS = 512
IDENTIFIER_KEYS = (
    "name",
    "addr",
    "ref",
    "id",
    "osm",
    "wiki",
    "website",
    "url",
    "phone",
    "email",
    "opening_hours",
    "contact",
    "source",
    "note",
    "description",
    "image",
    "check_date",
    "fixme",
)
"""Tag keys (or their ``prefix:``) that identify a POI rather than describe its use."""


def _descriptive(key: str) -> bool:
    head = key.split(":", 1)[0].split("_", 1)[0].lower()
    return head not in IDENTIFIER_KEYS


def tag_pairs(tags: list[dict[str, str]], rows: np.ndarray, n_rows: int) -> sp.csr_matrix:
    """Sparse counts ``[n_rows, V]`` of descriptive ``key=value`` pairs: POI ``i`` adds 1 to
    ``(rows[i], pair)`` for each of its pairs; the :data:`MAX_PAIRS` most frequent are kept
    (ties by name). POIs with ``rows[i] < 0`` add nothing."""
    poi, pair = [], []
    for i, t in enumerate(tags):
        if rows[i] < 0:
            continue
        for k, v in t.items():
            if _descriptive(k):
                poi.append(rows[i])
                pair.append(f"{k}={v}")
    if not pair:
        return sp.csr_matrix((n_rows, 0))
    vocab, col, freq = np.unique(np.array(pair, dtype=str), return_inverse=True, return_counts=True)
    top = np.lexsort((vocab, -freq))[:MAX_PAIRS]
    new = np.full(len(vocab), -1)
    new[top] = np.arange(len(top))
    col = new[col]
    keep = col >= 0
    data = np.ones(int(keep.sum()))
    mat = sp.csr_matrix((data, (np.array(poi)[keep], col[keep])), shape=(n_rows, len(top)))
    mat.sum_duplicates()
    return mat


def counts_features(city: City, level: str) -> np.ndarray:
    """Region: tf-idf of tag-pair counts plus ``City.region_size`` ``[R, V + 3]``;
    POI: the POI's own tag pairs ``[P, V]``."""
    tags = city.poi_tags()
    if level == "poi":
        return tag_pairs(tags, np.arange(len(tags)), len(tags)).toarray()
    counts = tag_pairs(tags, city.poi_region(), len(city.regions))
    tfidf = TfidfTransformer().fit_transform(counts) if counts.shape[1] else counts
    return np.hstack([tfidf.toarray(), city.region_size()])


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


def reference_features(run_dir: Path, name: str, level: str) -> np.ndarray | None:
    """``raw`` or ``untrained`` rows of every POI / region of the run's city, or None when
    the run did not write them (a run older than ``baselines.npz``, or no such level)."""
    path = run_dir / BASELINE_FILE
    if not path.is_file():
        return None
    with np.load(path) as data:
        key = f"{name}_{level}"
        return data[key] if key in data.files else None


def random_features(n: int, dim: int, seed: int) -> np.ndarray:
    """Seeded standard Gaussian vectors ``[n, dim]``."""
    return np.random.default_rng(seed).standard_normal((n, dim))
