"""Downstream evaluation: frozen embeddings, a probe, baselines on the same splits.

The library behind ``mfm eval RUN_DIR --task NAME``::

    from mfm.eval import evaluate, rich_table, write_eval
    result = evaluate("runs/demo", "population", split="spatial")
    write_eval("runs/demo", result)  # runs/demo/eval/population.json and .md

and behind ``mfm eval --embeddings FILE --city BUNDLE`` (any table, same tasks and baselines;
its scores stand under ``"mfm"``)::

    from mfm.eval import evaluate_embeddings
    result = evaluate_embeddings("mine.parquet", "cities/demo", "population", runs=3)
    write_eval(None, result, out="mine-eval")

``evaluate`` returns::

    {"task", "level", "kind", "split", "runs", "probe",
     "results": {"mfm": {...}, "raw": {...}, "untrained": {...}, "counts": {...},
                 "text": {...}, "random": {...}},
     "n", "dropped", "n_train", "n_test", "test_size", "seed", "labels", "selected",
     "missing": {baseline: why not computed}, "margin": {"metric", "best", "value", "std",
     "beyond_std"}}

where each regression result is ``{"rmse": [mean, std], "mae": [...], "r2": [...]}`` and
each classification result is ``{"macro_f1": [mean, std], "weighted_f1": [...],
"per_class": {label: {"f1": [mean, std], "support": mean test count}}}``. ``n`` is the
number of labelled items used, ``dropped`` the labels without an embedding, ``selected``
the hyper-parameter chosen per method and run, ``margin`` mfm's headline metric minus
that of the best baseline (``beyond_std``: the gap exceeds the larger of the two stds).
"""

from mfm.eval.baselines import BASELINES
from mfm.eval.embedding_table import EmbeddingTable, read_embedding_table
from mfm.eval.evaluate import (
    embeddings_city,
    evaluate,
    evaluate_embeddings,
    list_tasks,
    read_labels_file,
    write_eval,
)
from mfm.eval.probes import DEFAULT_PROBE, GRIDS, fit_probe
from mfm.eval.splits import SPLITS, make_splits, spatial_blocks
from mfm.eval.table import markdown_table, rich_table

__all__ = [
    "BASELINES",
    "DEFAULT_PROBE",
    "GRIDS",
    "SPLITS",
    "EmbeddingTable",
    "embeddings_city",
    "evaluate",
    "evaluate_embeddings",
    "fit_probe",
    "list_tasks",
    "make_splits",
    "markdown_table",
    "read_embedding_table",
    "read_labels_file",
    "rich_table",
    "spatial_blocks",
    "write_eval",
]
