"""Fast CPU extraction: the fp32 encoders vs their bf16 / int8 paths, in one run.

    python benchmarks/fast_extraction.py [--size small|medium] [--quick] [--repeats 3]
        [--threads N] [--real DIR | --no-real]

Texts: ``encode_texts`` over the synthetic city's serialized POI tags at ``precision``
fp32 and bf16 (osm defaults otherwise: batch 128, max_length 64, mean pooling), plus
dynamic int8 (``quantize_dynamic`` of every ``nn.Linear``, the same batching), which is
measured for the record but not offered (its cosine is far below 0.99).

Images: ``encode_images`` over the city's street-view images, decoded and resized once
beforehand (so the encoder is timed, not PNG decoding), at fp32 and bf16, plus static
int8 (FX graph mode, calibrated on the first 256 images, calibration timed with it),
measured for the record but not offered (its centred cosine is far below 0.99);
footprint masks of the city's POIs are checked for cosine only (binary images, another
input distribution).

Timed sides are warmed up once, then run ``--repeats`` times in turn (a burst of load from
elsewhere hits all of them) and the best time is kept; the ratio is fp32 time / fast
time. Cosine: per item, fast vs fp32 features, raw and centred on the fp32 mean
(random-init ResNet18 features of two different images have raw cosine ~0.99).

``--real`` (default: the Berlin bundle in ``benchmarks/data/berlin`` when present) adds
one pass per precision over a real city's POI texts (timed once, not best-of) with the
cosine on every POI. Writes ``benchmarks/results/fast_extraction.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import HERE, add_threads, machine, result_name, set_threads, table, write_result

TARGET = 2.0
CALIBRATION = 256  # int8 images: activation ranges from this many images
BERLIN = HERE / "data" / "berlin"


def _best_interleaved(
    sides: dict[str, Callable[[], torch.Tensor]], repeats: int
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Warm each side up once (its output kept), then time them in turn; best per side."""
    outputs = {name: fn() for name, fn in sides.items()}
    best = {name: float("inf") for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, outputs


def _cosine(fast: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Per-item cosine to fp32: raw, and centred on the fp32 mean (random-init ResNet18
    features share one large direction: raw cosine between two different images ~0.99)."""
    fast, ref = fast.double(), ref.double()
    mean = ref.mean(0)
    cos = torch.nn.functional.cosine_similarity(fast, ref, dim=1)
    centred = torch.nn.functional.cosine_similarity(fast - mean, ref - mean, dim=1)
    return {
        "cos_min": float(cos.min()),
        "cos_mean": float(cos.mean()),
        "cos_centred_min": float(centred.min()),
        "cos_centred_mean": float(centred.mean()),
    }


def _int8_texts(texts: Sequence[str], batch_size: int, max_length: int) -> torch.Tensor:
    """encode_texts' loop with a dynamically int8-quantized encoder (the rejected path)."""
    import numpy as np

    from mfm.core.encoders import DEFAULT_TEXT_MODEL, load_text_encoder, pool

    tokenizer, encoder = load_text_encoder(DEFAULT_TEXT_MODEL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = torch.ao.quantization.quantize_dynamic(
            encoder, {torch.nn.Linear}, dtype=torch.qint8
        )
    order = np.argsort([len(t) for t in texts])
    out = torch.empty(len(texts), encoder.config.hidden_size)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            sel = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in sel],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = encoder(**batch).last_hidden_state.float()
            out[torch.as_tensor(sel)] = pool(hidden, batch["attention_mask"], "mean")
    return out


def _int8_images(images: torch.Tensor, weights: str, batch_size: int) -> torch.Tensor:
    """Static int8 ResNet18 (FX graph mode, default engine), calibrated on the first
    ``CALIBRATION`` images (calibration timed with it): the rejected image path."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from mfm.core.encoders import build_resnet18, normalize_images

    batches = [normalize_images(b) for b in images.split(batch_size)]
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # "please migrate to torchao"
        mapping = get_default_qconfig_mapping(torch.backends.quantized.engine)
        net = prepare_fx(build_resnet18(weights), mapping, example_inputs=(batches[0],))
        for b in normalize_images(images[:CALIBRATION]).split(batch_size):
            net(b)
        net = convert_fx(net)
        return torch.cat([net(b) for b in batches])


def _text_sides(texts: list[str]) -> dict[str, Callable[[], torch.Tensor]]:
    from mfm.core.encoders import encode_texts
    from mfm.core.text import TextOptions

    opts = TextOptions()

    def side(precision: str) -> Callable[[], torch.Tensor]:
        return lambda: encode_texts(
            texts,
            opts.model,
            opts.pooling,
            opts.batch_size,
            opts.max_length,
            "cpu",
            quiet=True,
            precision=precision,  # type: ignore[arg-type]
        )

    return {
        "fp32": side("fp32"),
        "bf16": side("bf16"),
        "int8 (dynamic, rejected)": lambda: _int8_texts(texts, opts.batch_size, opts.max_length),
    }


def _rows(kind: str, n: int, best: dict[str, float], outputs: dict[str, Any]) -> list[dict]:
    rows = []
    for name, seconds in best.items():
        rows.append(
            {
                "kind": kind,
                "path": name,
                "items": n,
                "seconds": seconds,
                "per_s": n / seconds,
                "ratio": best["fp32"] / seconds,
                **_cosine(outputs[name], outputs["fp32"]),
            }
        )
    return rows


class _Decoded(torch.utils.data.Dataset):
    """Pre-decoded uint8 ``[N, H, W, 3]`` images as a Dataset."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def bench_texts(city: Any, repeats: int, limit: int | None) -> list[dict]:
    """encode_texts fp32 vs bf16 (and the int8 record) on the synthetic city's POI texts."""
    from mfm.core.text import serialize_tags

    texts = [serialize_tags(t) for t in city.poi_tags()][:limit]
    best, outputs = _best_interleaved(_text_sides(texts), repeats)
    return _rows("texts (synthetic)", len(texts), best, outputs)


def bench_real_texts(root: Path, limit: int | None) -> list[dict]:
    """One timed pass per precision over a real city's POI texts (cosine on every POI)."""
    from mfm.core.bundle.city import City
    from mfm.core.text import serialize_tags

    texts = [serialize_tags(t) for t in City.load(root).poi_tags()][:limit]
    best, outputs = {}, {}
    for name, fn in _text_sides(texts).items():
        t0 = time.perf_counter()
        outputs[name] = fn()
        best[name] = time.perf_counter() - t0
    return _rows(f"texts ({root.name}, 1 pass)", len(texts), best, outputs)


def bench_images(city: Any, repeats: int, limit: int | None) -> list[dict]:
    """encode_images fp32 / bf16 / int8 on decoded street-view images; footprints: cosine."""
    import numpy as np
    import shapely

    from mfm.core.constants import FOOTPRINT, SVI_DIRECTIONS
    from mfm.core.encoders import ImageFiles, encode_images
    from mfm.plugins.polygon.modality import PolygonOptions
    from mfm.plugins.polygon.raster import MaskImages, rasterize_footprints
    from mfm.plugins.svi.modality import SviOptions

    opts = SviOptions()
    rel = city.layer("svi")[list(SVI_DIRECTIONS)].to_numpy().reshape(-1)[:limit]
    files = ImageFiles([city.path(p) for p in rel], opts.image_size)
    decoded = _Decoded(torch.stack([files[i] for i in range(len(files))]))

    def side(images: torch.utils.data.Dataset, batch: int, precision: str) -> Callable:
        return lambda: encode_images(
            images,
            opts.weights,
            batch,
            "cpu",
            quiet=True,
            precision=precision,  # type: ignore[arg-type]
        )

    precisions = ("fp32", "bf16")
    sides = {p: side(decoded, opts.batch_size, p) for p in precisions}
    sides["int8 (static, rejected)"] = lambda: _int8_images(
        decoded.images, opts.weights, opts.batch_size
    )
    best, outputs = _best_interleaved(sides, repeats)
    rows = _rows("images (street view)", len(decoded), best, outputs)

    poly = PolygonOptions()
    geoms = city.pois[FOOTPRINT].to_crs(city.crs).to_numpy()
    geoms = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))][:limit]
    masks = MaskImages(np.asarray(rasterize_footprints(geoms, poly.image_size)))
    feats = {p: side(masks, poly.batch_size, p)() for p in precisions}
    stacked = torch.stack([masks[i] for i in range(len(masks))])
    feats["int8 (static, rejected)"] = _int8_images(stacked, poly.weights, poly.batch_size)
    for p, f in feats.items():
        rows.append(
            {"kind": "images (footprints, cosine only)", "path": p, "items": len(masks)}
            | _cosine(f, feats["fp32"])
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("small", "medium"), default="small")
    parser.add_argument("--quick", action="store_true", help="one repeat, 512 items")
    parser.add_argument("--repeats", type=int, default=None, help="best of this many (3)")
    parser.add_argument("--real", type=Path, default=BERLIN, help="a real City bundle")
    parser.add_argument("--no-real", action="store_true", help="skip the real city")
    add_threads(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    limit = 512 if args.quick else None

    from mfm.cities.default import default_city
    from mfm.core.bundle.city import City
    from mfm.core.encoders import native_bf16

    before = machine()
    city = City.load(default_city(args.size))
    rows = bench_texts(city, repeats, limit) + bench_images(city, repeats, limit)
    real = None if args.no_real or not args.real.is_dir() else args.real
    if real is not None:
        rows += bench_real_texts(real, limit)
    after = machine()
    payload = {
        "benchmark": "fast_extraction",
        "size": args.size,
        "repeats": repeats,
        "target_ratio": TARGET,
        "native_bf16": native_bf16("cpu"),
        "real_city": str(real) if real else None,
        "machine_before": before,
        "machine_after": after,
        "results": rows,
    }
    path = write_result(result_name("fast_extraction", args.threads), payload)
    print(
        f"fast extraction on the {args.size} city, best of {repeats}; native bf16: "
        f"{payload['native_bf16']}; load avg {before['loadavg']} -> {after['loadavg']}"
    )
    headers = [
        "kind",
        "path",
        "n",
        "items/s",
        f"ratio (target {TARGET})",
        "cos min / mean",
        "centred cos min / mean",
    ]
    cells = [
        [
            r["kind"],
            r["path"],
            r["items"],
            r.get("per_s", "-"),
            r.get("ratio", "-"),
            f"{r['cos_min']:.5f} / {r['cos_mean']:.5f}",
            f"{r['cos_centred_min']:.4f} / {r['cos_centred_mean']:.4f}",
        ]
        for r in rows
    ]
    print(table(headers, cells))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
