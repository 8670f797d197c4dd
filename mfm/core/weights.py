"""The trained model a finished run ships: ``model.safetensors``, small and self-describing.

It holds the trained modules only (heads, fusion, graph encoders: the frozen backbones
are not model parameters, their features come from the feature cache), parameters in
float16 (half the bytes; the run exports its embeddings from these very values, so
``mfm embed`` of the training city reproduces them), buffers in float32. Its metadata
holds the training history, so ``--resume`` of a finished run needs nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mfm.core.atomic import atomic_path
from mfm.core.errors import MfmError

MODEL_FILE = "model.safetensors"
"""In the run directory: the trained weights (see the module docstring)."""
_HALF_MAX = float(torch.finfo(torch.float16).max)


@torch.no_grad()
def round_to_shipped(model: nn.Module) -> None:
    """Round every float parameter to float16 and back, in place: the values the run ships.

    A tensor whose values do not fit float16 keeps float32 (so it is stored as such)."""
    for p in model.parameters():
        if p.is_floating_point() and p.dtype == torch.float32 and _fits_half(p):
            p.copy_(p.half().float())


def _fits_half(t: torch.Tensor) -> bool:
    return bool(t.numel() == 0 or t.detach().abs().max() <= _HALF_MAX)


def save_model(model: nn.Module, path: Path, meta: dict[str, Any]) -> Path:
    """Write ``model``'s state (parameters as float16 where exact after
    :func:`round_to_shipped`) and ``meta`` (JSON in the file's metadata) atomically."""
    params = {name for name, _ in model.named_parameters()}
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        if name in params and value.dtype == torch.float32 and _fits_half(value):
            value = value.half()
        tensors[name] = value
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"mfm": json.dumps(meta)})
    return path


def read_model(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in float32, metadata) of a file written by :func:`save_model`."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("mfm", "{}"))
        state = load_file(path, device=str(device))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise MfmError(f"cannot read {path} ({type(exc).__name__}); re-run `mfm run`") from None
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}, meta
