"""Does a config change help beyond training-seed noise? A paired test over training seeds.

    python benchmarks/train_seeds.py [--cities berlin,sao_paulo,curitiba] [--train-seeds 3]
        --variant KEY=VALUE [--variant ...] [--epochs N] [--tag T]

One trained model is one draw: two runs that differ only in their seed differ by about as
much as most changes do. So for each city this trains the default model and the variant
(config overrides) with training seeds 0..N-1 (runs cached as in ``quality.py``), probes
every task with ridge on random and spatial splits (the same 10 seeded splits for every
run), and reports per cell the mean (std over training seeds) of the default, of the
variant and of ``untrained`` (the default's initialization), and the paired difference
default - variant. Writes ``benchmarks/results/train-seeds[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, table, write_result
from quality import REAL, headline, overrides, trained_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cities", default=",".join(REAL))
    parser.add_argument("--train-seeds", type=int, default=3)
    parser.add_argument("--variant", action="append", required=True, metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=None, help="per stage (default: config)")
    parser.add_argument("--splits", default="random,spatial")
    parser.add_argument("--tag", default=None, help="write results/train-seeds-<tag>.json")
    args = parser.parse_args()

    from mfm.eval import evaluate, list_tasks

    variant = overrides(args.variant)
    rows: list[dict[str, Any]] = []
    for name in args.cities.split(","):
        scores: dict[tuple[str, str], dict[str, list[float]]] = {}
        for seed in range(args.train_seeds):
            for label, over in (("default", {}), ("variant", variant)):
                run_dir = trained_run(name, args.epochs, seed, over)
                for task in list_tasks(run_dir):
                    for split in args.splits.split(","):
                        res = evaluate(run_dir, task, split=split, probe="ridge", runs=10)
                        cell = scores.setdefault((task, split), {"metric": [res["kind"]]})
                        cell.setdefault(label, []).append(headline(res, "mfm")[0])
                        if label == "default":
                            cell.setdefault("untrained", []).append(headline(res, "untrained")[0])
        for (task, split), cell in scores.items():
            d, v = np.array(cell["default"]), np.array(cell["variant"])
            rows.append(
                {
                    "city": name,
                    "task": task,
                    "split": split,
                    "metric": "R2" if cell["metric"][0] == "regression" else "macro F1",
                    "default": cell["default"],
                    "variant": cell["variant"],
                    "untrained": cell["untrained"],
                    "difference": [float((d - v).mean()), float((d - v).std())],
                }
            )
        tag = "train-seeds" if args.tag is None else f"train-seeds-{args.tag}"
        out = {"machine": machine(), "args": vars(args), "rows": rows}
        path = write_result(tag, out)  # after every city: a failure keeps what was measured
    print(markdown(rows, variant))
    print(f"wrote {path}")


def _ms(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({np.std(values):.3f})"


def markdown(rows: list[dict[str, Any]], variant: dict[str, Any]) -> str:
    """One row per city, task and split: default, variant, untrained, paired difference."""
    what = ", ".join(f"{k}={v}" for k, v in variant.items())
    headers = ["city", "task", "split", "metric", "default", what, "untrained", "default - variant"]
    body = [
        [
            r["city"],
            r["task"],
            r["split"],
            r["metric"],
            _ms(r["default"]),
            _ms(r["variant"]),
            _ms(r["untrained"]),
            f"{r['difference'][0]:+.3f} ({r['difference'][1]:.3f})",
        ]
        for r in rows
    ]
    return table(headers, body)


if __name__ == "__main__":
    main()
