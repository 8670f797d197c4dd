"""On-disk cache of frozen backbone features, keyed by model, input and preprocessing.

Importing it does not import torch (``default_cache_dir`` serves the light CLI paths)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mfm.core.atomic import atomic_path

if TYPE_CHECKING:
    import torch

CACHE_ENV = "MFM_CACHE"


def default_cache_dir() -> Path:
    """``$MFM_CACHE`` or ``~/.cache/mfm``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mfm")


def cache_key(parts: dict[str, object]) -> str:
    """A stable hash of what determines a feature tensor."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def files_signature(paths: list[Path]) -> str:
    """A cheap hash of files' names, sizes and modification times (no content reads), so
    that replacing an image invalidates the features computed from it."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:24]


class FeatureCache:
    """Stores dicts of tensors as safetensors files named by the hash of their key."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, parts: dict[str, object]) -> Path:
        return self.root / kind / f"{cache_key(parts)}.safetensors"

    def get_or_compute(
        self,
        kind: str,
        parts: dict[str, object],
        compute: Callable[[], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Load the cached tensors for ``parts`` or compute, store and return them.

        ``compute`` runs with the global RNG forked, so a model built after it starts from
        the same random state whether the features were cached or not."""
        import torch
        from safetensors.torch import load_file, save_file

        path = self.path(kind, parts)
        if self.enabled and path.exists():
            self.hits += 1
            return load_file(path)
        self.misses += 1
        with torch.random.fork_rng(devices=[]):
            computed = compute()
        tensors = {k: v.detach().cpu().contiguous() for k, v in computed.items()}
        if self.enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file(tensors, tmp, metadata={"key": json.dumps(parts, default=str)})
        return tensors
