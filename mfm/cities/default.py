"""The embedded default city: the small synthetic city, generated once and cached."""

from __future__ import annotations

from pathlib import Path

from mfm.core.cache import default_cache_dir
from mfm.core.constants import CITY_MANIFEST
from mfm.core.progress import log


def default_city(size: str = "small", seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Path of the synthetic city of ``size`` and ``seed``, generating it on first use."""
    from mfm.cities.synth import generate_city

    root = Path(cache_dir or default_cache_dir()) / "cities" / f"synthetic-{size}-seed{seed}"
    if not (root / CITY_MANIFEST).exists():
        log(f"generating the {size} synthetic city (seed {seed}) in {root}")
        generate_city(root, size=size, seed=seed)  # type: ignore[arg-type]
    return root
