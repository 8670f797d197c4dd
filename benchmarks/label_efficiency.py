"""Is training's gain hidden by plentiful labels? The probe trained on fewer labels.

    python benchmarks/label_efficiency.py [--cities berlin,sao_paulo,curitiba]
        [--train-shares 0.8,0.5,0.2,0.1] [--split random]

Self-supervised pre-training should matter most when labels are few. This probes the
default run of ``quality.py`` (same cache) with ridge on random splits whose train part is
each share of the labelled items (the test part the rest), 10 seeded splits each, against
``untrained``, ``raw`` and ``counts``. Writes ``benchmarks/results/label-efficiency.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, table, write_result
from quality import REAL, headline, trained_run

METHODS = ("mfm", "untrained", "raw", "counts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cities", default=",".join(REAL))
    parser.add_argument("--train-shares", default="0.8,0.5,0.2,0.1")
    parser.add_argument("--split", default="random")
    args = parser.parse_args()

    from mfm.eval import evaluate, list_tasks

    rows: list[dict[str, Any]] = []
    for name in args.cities.split(","):
        run_dir = trained_run(name, None, 0)
        for task in list_tasks(run_dir):
            for share in (float(s) for s in args.train_shares.split(",")):
                res = evaluate(
                    run_dir,
                    task,
                    split=args.split,
                    probe="ridge",
                    runs=10,
                    baselines=METHODS[1:],
                    test_size=round(1 - share, 6),
                )
                rows.append(
                    {
                        "city": name,
                        "task": task,
                        "train_share": share,
                        "n_train": int(res["n"] * share),
                        "metric": "R2" if res["kind"] == "regression" else "macro F1",
                        "scores": {m: headline(res, m) for m in METHODS},
                    }
                )
        write_result("label-efficiency", {"machine": machine(), "args": vars(args), "rows": rows})
    headers = ["city", "task", "train share", "n train", "metric", *METHODS]
    body = [
        [r["city"], r["task"], r["train_share"], r["n_train"], r["metric"]]
        + [f"{r['scores'][m][0]:.3f} ({r['scores'][m][1]:.3f})" for m in METHODS]
        for r in rows
    ]
    print(table(headers, body))


if __name__ == "__main__":
    main()
