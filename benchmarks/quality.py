"""Real-city quality benchmark: does training add anything over what the model was given?

    python benchmarks/quality.py [--cities berlin,sao_paulo,curitiba,medium] [--epochs N]
        [--seeds 10] [--probes ridge,rf] [--splits random,spatial]

For each city (the real bundles in ``benchmarks/data/``, see its ``SOURCES.md`` and
``licences/``; ``medium`` is the synthetic city, generated once) it trains ``mfm run``
with the default plugins and config (``--epochs`` overrides the per-stage epochs), then
probes every labelled task with every probe and split over ``--seeds`` seeded splits,
against every baseline (``raw``, ``untrained``, ``counts``, ``text``, ``random``).

Runs are cached under ``$MFM_CACHE/quality/<city>-<key>`` (key: a hash of the config and
of the ``mfm/`` code; frozen features in the feature cache as usual), so a rerun with the
same settings and code costs only the probes.
Writes ``benchmarks/results/quality.json`` and prints the per-task markdown table.
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

from _common import machine, table, write_result

DATA = Path(__file__).resolve().parent / "data"
REAL = ("berlin", "sao_paulo", "curitiba")
METHODS = ("mfm", "raw", "untrained", "counts", "text", "random")


def city_path(name: str) -> Path:
    """The bundle of ``name``: a real one in benchmarks/data, or a synthetic size."""
    if name in REAL:
        return DATA / name
    from mfm.cities.default import default_city

    return default_city(name)


def code_version() -> str:
    """Git tree hash of ``mfm/`` (changes only with the package's code), ``+dirty`` when
    it has uncommitted changes; "unknown" outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        tree = subprocess.run(
            ["git", "rev-parse", "HEAD:mfm"], cwd=root, check=True, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "mfm"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return tree[:12] + ("+dirty" if dirty else "")


def trained_run(
    name: str, epochs: int | None, seed: int, overrides: dict[str, Any] | None = None
) -> Path:
    """A finished run of the default model (with config ``overrides``) on city ``name``
    (trained once, then reused)."""
    from mfm.core.cache import default_cache_dir
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    city = city_path(name)
    config = make_config(city=city, epochs=epochs, seed=seed, quiet=True, **(overrides or {}))
    state = {"config": config.model_dump(mode="json"), "code": code_version()}
    key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]
    out = default_cache_dir() / "quality" / f"{name}-{key}"
    if not (out / "manifest.json").is_file():
        config = config.model_copy(update={"out": out})
        t0 = time.perf_counter()
        run(config, resume=(out / "checkpoints").is_dir())
        print(f"{name}: trained in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return out


def headline(result: dict[str, Any], method: str) -> list[float | None]:
    metric = "r2" if result["kind"] == "regression" else "macro_f1"
    return result["results"].get(method, {}).get(metric, [None, None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cities", default=",".join((*REAL, "medium")))
    parser.add_argument("--epochs", type=int, default=None, help="per stage (default: config)")
    parser.add_argument("--seeds", type=int, default=10, help="seeded splits per cell")
    parser.add_argument("--probes", default="ridge,rf")
    parser.add_argument("--splits", default="random,spatial")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--print", action="store_true", help="print the last table, run nothing")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a config override"
    )
    parser.add_argument("--tag", default=None, help="write results/quality-<tag>.json instead")
    args = parser.parse_args()
    if args.print:
        print(markdown(merged([])))
        return

    from mfm.eval import evaluate, list_tasks

    rows: list[dict[str, Any]] = []
    for name in args.cities.split(","):
        run_dir = trained_run(name, args.epochs, args.seed, overrides(args.set))
        manifest = json.loads((run_dir / "manifest.json").read_text())
        for task in list_tasks(run_dir):
            for probe in args.probes.split(","):
                for split in args.splits.split(","):
                    t0 = time.perf_counter()
                    res = evaluate(run_dir, task, split=split, probe=probe, runs=args.seeds)
                    rows.append(
                        {
                            "city": name,
                            "task": task,
                            "kind": res["kind"],
                            "n": res["n"],
                            "probe": probe,
                            "split": split,
                            "metric": "R2" if res["kind"] == "regression" else "macro F1",
                            "scores": {m: headline(res, m) for m in METHODS},
                            "margin": res["margin"],
                            "plan": [p["objective"] for p in manifest["plan"] if not p["skipped"]],
                            "train_seconds": manifest["wall_seconds"],
                            "epochs": manifest["config"]["epochs"],
                        }
                    )
                    print(
                        f"{name}/{task} {probe} {split}: {time.perf_counter() - t0:.0f} s",
                        flush=True,
                    )
        # after every city, so that a failure later keeps what was measured
        result = "quality" if args.tag is None else f"quality-{args.tag}"
        out = {"machine": machine(), "args": vars(args), "rows": merged(rows, result)}
        path = write_result(result, out)
    print(markdown(rows))
    print(f"wrote {path}")


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``["earlier_lr=1.0"]`` -> ``{"earlier_lr": 1.0}`` (values parsed as JSON if they can be)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def merged(rows: list[dict[str, Any]], result: str = "quality") -> list[dict[str, Any]]:
    """Earlier rows of ``<result>.json`` for other cities, then ``rows`` (so that cities can
    be benchmarked in separate invocations, e.g. with other ``--epochs``)."""
    path = Path(__file__).resolve().parent / "results" / f"{result}.json"
    done = {r["city"] for r in rows}
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = [r for r in old if r["city"] not in done] + rows
    order = {c: i for i, c in enumerate((*REAL, "medium"))}
    return sorted(rows, key=lambda r: order.get(r["city"], len(order)))  # stable per city


def _cell(pair: list[float | None]) -> str:
    return "-" if not pair or pair[0] is None else f"{pair[0]:.3f} ({pair[1]:.3f})"


def markdown(rows: list[dict[str, Any]]) -> str:
    """One row per city, task, probe and split: every method's mean (std), and the margin."""
    headers = ["city", "task", "n", "metric", "probe", "split", *METHODS, "mfm - best", "> 1 std"]
    body = []
    for r in rows:
        m = r["margin"] or {}
        body.append(
            [
                r["city"],
                r["task"],
                r["n"],
                r["metric"],
                r["probe"],
                r["split"],
                *(_cell(r["scores"][k]) for k in METHODS),
                f"{m['value']:+.3f} ({m['best']})" if m else "-",
                ("yes" if m["value"] > 0 else "LOSS") if m and m["beyond_std"] else "no",
            ]
        )
    return table(headers, body)


if __name__ == "__main__":
    main()
