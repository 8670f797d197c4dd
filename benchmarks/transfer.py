"""Cross-city transfer: a model trained on one city, applied to another with ``mfm embed``.

    python benchmarks/transfer.py [--pairs synthetic,brazil] [--seeds 10] [--epochs N]

For each pair (source -> target) it trains the default model on both cities (same
plugins, same config), embeds the target with the source's model, and probes the
target's tasks (ridge, random split, ``--seeds`` seeded splits) for the transferred
embeddings, the target's own trained embeddings and the baselines (from the embed
directory: the target's ``raw`` features and the ``untrained`` model, ``counts``,
``text``).

- ``synthetic``: small synthetic city seed 0 -> seed 1 (population, price, function).
- ``brazil``: Porto Alegre (``tests/data/porto_alegre``: OSM extract and Ipea hex grid,
  built into a bundle with H3 res-9 regions once) -> Sao Paulo (``benchmarks/data``),
  and back; population and jobs (same Ipea source on both).

Writes ``benchmarks/results/transfer.json`` and prints the markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result
from quality import code_version, headline

ROOT = Path(__file__).resolve().parent.parent
POA_RAW = ROOT / "tests" / "data" / "porto_alegre"
SAO_PAULO = ROOT / "benchmarks" / "data" / "sao_paulo"
PAIRS = {
    "synthetic": [("small-seed0", "small-seed1")],
    "brazil": [("porto_alegre", "sao_paulo"), ("sao_paulo", "porto_alegre")],
}
PLUGINS = {"synthetic": None, "brazil": "osm"}
"""Both cities of a pair must offer the model's modalities: Sao Paulo has 6 footprints."""
METHODS = ("target", "transfer", "untrained", "raw", "counts", "text")


def _cache() -> Path:
    from mfm.core.cache import default_cache_dir

    return default_cache_dir() / "transfer"


def porto_alegre() -> Path:
    """The Porto Alegre bundle: OSM POIs and roads, H3 res-9 regions, Ipea labels."""
    from mfm.cities.add_labels import add_labels
    from mfm.cities.from_osm import from_osm

    root = _cache() / "porto_alegre"
    if not (root / "city.toml").is_file():
        from_osm(POA_RAW / "poa_osm.pbf", root, regions="h3:9", name="porto_alegre")
        for column in ("population", "jobs"):
            add_labels(
                root,
                POA_RAW / "poa_hexgrid.csv",
                name=column,
                column=column,
                id_column="id",
                kind="regression",
                drop_invalid=True,
            )
    return root


def city(name: str) -> Path:
    """The bundle of ``name``: ``small-seed<k>``, ``porto_alegre`` or ``sao_paulo``."""
    if name == "porto_alegre":
        return porto_alegre()
    if name == "sao_paulo":
        return SAO_PAULO
    from mfm.cities.synth import generate_city

    size, seed = name.split("-seed")
    root = _cache() / name
    if not (root / "city.toml").is_file():
        generate_city(root, size=size, seed=int(seed))  # type: ignore[arg-type]
    return root


def trained(name: str, plugins: str | None, epochs: int | None) -> Path:
    """A finished default run on ``name`` (trained once per config and code version)."""
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    config = make_config(city=city(name), plugins=plugins, epochs=epochs, quiet=True)
    state = {"config": config.model_dump(mode="json"), "code": code_version()}
    key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]
    out = _cache() / "runs" / f"{name}-{key}"
    if not (out / "manifest.json").is_file():
        t0 = time.perf_counter()
        run(config.model_copy(update={"out": out}), resume=(out / "checkpoints").is_dir())
        print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def embedded(source_run: Path, target: str) -> Path:
    """``mfm embed`` of ``target`` with the model of ``source_run`` (once)."""
    import mfm

    out = source_run.with_name(f"{source_run.name}-on-{target}")
    if not (out / "manifest.json").is_file():
        mfm.load(source_run).embed(city(target), out, overwrite=True, quiet=True)
    return out


def compare(
    source: str, target: str, plugins: str | None, epochs: int | None, seeds: int
) -> list[dict[str, Any]]:
    """Probe every task of ``target`` with the transferred and the target's own embeddings."""
    from mfm.eval import evaluate, list_tasks

    own = trained(target, plugins, epochs)
    moved = embedded(trained(source, plugins, epochs), target)
    rows = []
    for task in list_tasks(own):
        ours = evaluate(own, task, runs=seeds, baselines=())
        theirs = evaluate(moved, task, runs=seeds, baselines=("untrained", "raw", "counts", "text"))
        cells = {"target": headline(ours, "mfm"), "transfer": headline(theirs, "mfm")}
        cells |= {m: headline(theirs, m) for m in METHODS[2:]}
        rows.append(
            {"source": source, "target": target, "task": task, "kind": ours["kind"], "n": ours["n"]}
            | {"cells": cells}
        )
        print(f"{source} -> {target} {task}: {cells}", flush=True)
    return rows


def _cell(pair: list[float | None]) -> str:
    mean, std = pair
    return "-" if mean is None else f"{mean:.3f} ({std:.3f})"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The transfer table: one row per (pair, task), R2 or macro F1 mean (std)."""
    head = "| source -> target | task | " + " | ".join(METHODS) + " | transfer - target |"
    lines = [head, "|---|---|" + "---:|" * len(METHODS) + "---|"]
    for r in rows:
        c = r["cells"]
        gap = c["transfer"][0] - c["target"][0]
        metric = "R2" if r["kind"] == "regression" else "macro F1"
        lines.append(
            f"| {r['source']} -> {r['target']} | {r['task']} {metric} (n={r['n']}) | "
            + " | ".join(_cell(c[m]) for m in METHODS)
            + f" | {gap:+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="synthetic,brazil")
    parser.add_argument("--seeds", type=int, default=10, help="seeded splits per cell")
    parser.add_argument("--epochs", type=int, default=None, help="per stage (default: config)")
    parser.add_argument("--print", action="store_true", help="print the last table, run nothing")
    args = parser.parse_args()
    if args.print:
        rows = json.loads((ROOT / "benchmarks/results/transfer.json").read_text())["rows"]
        print(markdown(rows))
        return
    rows: list[dict[str, Any]] = []
    for group in args.pairs.split(","):
        for source, target in PAIRS[group]:
            rows += compare(source, target, PLUGINS[group], args.epochs, args.seeds)
    write_result(
        "transfer",
        {
            "machine": machine(),
            "code": code_version(),
            "epochs": args.epochs,
            "seeds": args.seeds,
            "rows": rows,
        },
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
