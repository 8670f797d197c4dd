"""Feature-extraction efficiency: pipeline throughput / bare encoder throughput, one run.

    python benchmarks/extraction.py [--size small|medium] [--quick] [--repeats 3]

Images: the svi plugin's prepare path, ``encode_images(ImageFiles(paths, image_size))``
over every street-view image of the synthetic city (plugin defaults: image size, batch
size, weights; ``num_workers`` from the default RunConfig), against the bare ResNet18
(``build_resnet18("none")``) forward on a tensor of the same images, decoded, resized and
normalized beforehand.

Texts: ``encode_texts`` on the city's serialized POI tags (the osm plugin's defaults:
batch 128, max_length 64, mean pooling) against the bare MiniLM forward on the same
texts pre-tokenized into the same batches (same order, batch size and max_length).

Each side is warmed up once, then timed ``--repeats`` times, the two sides interleaved
(so a burst of load from elsewhere hits both), and the best time is kept. The ratio is
reported end to end (the pipeline call as the plugin makes it, model construction
included) and in steady state (the model construction time, measured in the same run,
subtracted). Writes ``benchmarks/results/extraction.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import machine, parse_args, result_name, table, write_result

TARGET = 0.8


def _best_interleaved(sides: dict[str, Any], repeats: int) -> dict[str, float]:
    """Warm each side up once, then time them in turn ``repeats`` times; best per side."""
    for fn in sides.values():
        fn()
    best = {name: float("inf") for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _best(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_images(city: Any, repeats: int, limit: int | None) -> dict[str, Any]:
    """svi prepare path vs the bare ResNet18 forward on the same pre-loaded images."""
    from mfm.core.config import RunConfig
    from mfm.core.constants import SVI_DIRECTIONS
    from mfm.core.encoders import ImageFiles, build_resnet18, encode_images, normalize_images
    from mfm.plugins.svi.modality import SviOptions

    opts, workers = SviOptions(), RunConfig().num_workers
    rel = city.layer("svi")[list(SVI_DIRECTIONS)].to_numpy().reshape(-1)
    paths = [city.path(p) for p in rel][:limit]
    dataset = ImageFiles(paths, opts.image_size)
    n = len(dataset)

    def pipeline() -> torch.Tensor:
        return encode_images(dataset, opts.weights, opts.batch_size, "cpu", workers, quiet=True)

    images = normalize_images(torch.stack([dataset[i] for i in range(n)]))  # [N, 3, H, W]
    net = build_resnet18(opts.weights)

    @torch.inference_mode()
    def bare() -> torch.Tensor:
        return torch.cat(
            [net(images[i : i + opts.batch_size]) for i in range(0, n, opts.batch_size)]
        )

    best = _best_interleaved({"pipeline": pipeline, "bare": bare}, repeats)
    build = _best(lambda: build_resnet18(opts.weights), repeats)
    decode = _best(lambda: [dataset[i] for i in range(n)], repeats)
    return {
        "items": n,
        "unit": "images",
        "image_size": opts.image_size,
        "batch_size": opts.batch_size,
        "num_workers": workers,
        "pipeline_seconds": best["pipeline"],
        "bare_seconds": best["bare"],
        "model_build_seconds": build,
        "decode_resize_seconds": decode,
    }


def bench_texts(city: Any, repeats: int, limit: int | None) -> dict[str, Any]:
    """osm prepare path (encode_texts) vs the bare MiniLM forward on pre-tokenized batches."""
    import numpy as np

    from mfm.core.encoders import DEFAULT_TEXT_MODEL, encode_texts, load_text_encoder
    from mfm.plugins.osm.modality import OsmOptions, serialize_tags

    opts = OsmOptions()
    texts = [serialize_tags(t) for t in city.poi_tags()][:limit]
    n = len(texts)

    def pipeline() -> torch.Tensor:
        return encode_texts(
            texts, opts.model, opts.pooling, opts.batch_size, opts.max_length, "cpu", quiet=True
        )

    tokenizer, encoder = load_text_encoder(DEFAULT_TEXT_MODEL)
    order = np.argsort([len(t) for t in texts])  # the batches encode_texts makes
    batches = [
        tokenizer(
            [texts[i] for i in order[s : s + opts.batch_size]],
            padding=True,
            truncation=True,
            max_length=opts.max_length,
            return_tensors="pt",
        )
        for s in range(0, n, opts.batch_size)
    ]

    @torch.inference_mode()
    def bare() -> list[torch.Tensor]:
        return [encoder(**b).last_hidden_state for b in batches]

    def tokenize() -> None:
        for s in range(0, n, opts.batch_size):
            tokenizer(
                [texts[i] for i in order[s : s + opts.batch_size]],
                padding=True,
                truncation=True,
                max_length=opts.max_length,
                return_tensors="pt",
            )

    best = _best_interleaved({"pipeline": pipeline, "bare": bare}, repeats)
    load = _best(lambda: load_text_encoder(DEFAULT_TEXT_MODEL), repeats)
    tok = _best(tokenize, repeats)
    return {
        "items": n,
        "unit": "texts",
        "model": opts.model,
        "batch_size": opts.batch_size,
        "max_length": opts.max_length,
        "mean_tokens": float(
            np.mean([int(b["attention_mask"].sum(1).float().mean()) for b in batches])
        ),
        "pipeline_seconds": best["pipeline"],
        "bare_seconds": best["bare"],
        "model_build_seconds": load,
        "tokenize_seconds": tok,
    }


def _ratios(r: dict[str, Any]) -> dict[str, Any]:
    n = r["items"]
    steady = max(r["pipeline_seconds"] - r["model_build_seconds"], 1e-9)
    r["pipeline_per_s"] = n / r["pipeline_seconds"]
    r["pipeline_steady_per_s"] = n / steady
    r["bare_per_s"] = n / r["bare_seconds"]
    r["ratio"] = r["pipeline_per_s"] / r["bare_per_s"]
    r["ratio_steady"] = r["pipeline_steady_per_s"] / r["bare_per_s"]
    r["meets_target"] = r["ratio"] >= TARGET
    r["meets_target_steady"] = r["ratio_steady"] >= TARGET
    return r


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], default_size="small")
    repeats = args.repeats or (1 if args.quick else 3)
    limit = 512 if args.quick else None
    from mfm.cities.default import default_city
    from mfm.core.bundle.city import City

    before = machine()
    city = City.load(default_city(args.size))
    results = {
        "images": _ratios(bench_images(city, repeats, limit)),
        "texts": _ratios(bench_texts(city, repeats, limit)),
    }
    after = machine()
    payload = {
        "benchmark": "extraction",
        "size": args.size,
        "repeats": repeats,
        "target": TARGET,
        "machine_before": before,
        "machine_after": after,
        "results": results,
    }
    path = write_result(result_name("extraction", args.threads), payload)
    print(
        f"extraction on the {args.size} city, best of {repeats}; "
        f"load avg {before['loadavg']} -> {after['loadavg']}"
    )
    rows = []
    for name, r in results.items():
        rows.append(
            [
                name,
                r["items"],
                r["pipeline_per_s"],
                r["pipeline_steady_per_s"],
                r["bare_per_s"],
                r["ratio"],
                r["ratio_steady"],
                r["model_build_seconds"],
            ]
        )
    print(
        table(
            [
                "kind",
                "n",
                "pipeline /s",
                "pipeline steady /s",
                "bare /s",
                "ratio",
                f"ratio steady (target {TARGET})",
                "model build s",
            ],
            rows,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
