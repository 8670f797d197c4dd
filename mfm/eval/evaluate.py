"""``evaluate``: probe a run's frozen embeddings on a labelled task, against baselines.

For each of ``runs`` seeded splits, a probe (ridge by default) is fitted on the train part
of every method's features (the mfm embeddings and each baseline, all on the same splits),
its hyper-parameter chosen on a validation split of the train part, and scored on the test
part. Metrics are reported as ``[mean, std]`` over the runs (std with ddof=0).

``evaluate_embeddings`` scores any embedding table (Parquet, CSV, ``.npy`` plus ids, or a
DataFrame) the same way; its scores stand in the ``mfm`` column of the results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from threadpoolctl import threadpool_limits

from mfm.core.atomic import write_text
from mfm.core.bundle import City, LabelSpec
from mfm.core.cache import FeatureCache, default_cache_dir
from mfm.core.constants import (
    POI_ID,
    REGION_ID,
)
from mfm.core.embed import read_embeddings, write_json
from mfm.core.errors import MfmError
from mfm.core.export import BASELINE_FILE
from mfm.core.rundir import RunDir
from mfm.eval.baselines import (
    BASELINES,
    REFERENCES,
    counts_features,
    random_features,
    reference_features,
    text_features,
)
from mfm.eval.embedding_table import (
    EmbeddingSource,
    EmbeddingTable,
    city_ids,
    read_embedding_table,
)
from mfm.eval.probes import DEFAULT_PROBE, GRIDS, fit_probe
from mfm.eval.splits import SPLITS, IndexPair, make_splits, spatial_blocks

LEVELS = {"region": REGION_ID, "poi": POI_ID}
KINDS = {"regression": "value", "classification": "label"}
_LAYER = {"region": "regions", "poi": "pois"}
MIN_ITEMS = 5
"""Fewest labelled items a task needs."""


# --------------------------------------------------------------------------- the run


def list_tasks(run_dir: Path | str, city: Path | str | None = None) -> dict[str, LabelSpec]:
    """The labelled tasks (``[labels.*]``) of the run's city, by name."""
    return dict(RunDir(run_dir).city(city).labels)


def _embeddings(run: RunDir, level: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, embeddings) of the run at ``level``."""
    frame, emb = read_embeddings(run.embeddings_file(level))
    return frame[LEVELS[level]].astype(str).to_numpy(), emb


# --------------------------------------------------------------------------- labels


def read_labels_file(
    path: Path | str, level: str | None = None, kind: str | None = None
) -> tuple[pd.DataFrame, str, str]:
    """Read a labels CSV from outside the bundle: ``(frame[id, target], level, kind)``.

    Level and kind are inferred from the columns (``region_id``/``poi_id``,
    ``value``/``label``) when not given.

    Raises:
        MfmError: Missing file or column, bad values, duplicate ids; names the file and fix.
    """
    path = Path(path)
    if not path.is_file():
        raise MfmError(f"labels file {path} not found; pass the path of a labels CSV")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=True)
    except Exception as exc:  # pandas raises several types for unreadable CSVs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MfmError(
            f"cannot read {path} as CSV ({first}); write a CSV with a header row"
        ) from None

    def pick(given: str | None, table: dict[str, str], what: str, flag: str) -> str:
        if given is not None:
            if given not in table:
                raise MfmError(f"{flag} {given!r} is not valid; use one of: {', '.join(table)}")
            return given
        found = [k for k, col in table.items() if col in df.columns]
        if len(found) != 1:
            cols = " or ".join(table.values())
            raise MfmError(
                f"cannot tell the {what} of {path} (it needs exactly one {cols} column); "
                f"pass {flag} {'|'.join(table)}"
            )
        return found[0]

    level = pick(level, LEVELS, "level", "--level")
    kind = pick(kind, KINDS, "kind", "--kind")
    id_col, target = LEVELS[level], KINDS[kind]
    for col in (id_col, target):
        if col not in df.columns:
            raise MfmError(
                f"{path}: missing column '{col}'; a {level} {kind} labels CSV needs columns "
                f"{id_col},{target}"
            )
    bad = df[id_col].isna().to_numpy()
    _row_error(path, bad, f"missing {id_col}; every row needs an id")
    dup = df[id_col].duplicated().to_numpy()
    _row_error(path, dup, f"duplicate {id_col}; ids must be unique")
    if kind == "regression":
        values = pd.to_numeric(df[target], errors="coerce").to_numpy(dtype=np.float64)
        _row_error(
            path,
            ~np.isfinite(values),
            "value is not a finite number; regression labels need numeric values",
        )
    else:
        values = df[target].to_numpy(dtype=object)
        _row_error(
            path, df[target].isna().to_numpy(), "missing label; drop the row or give it a class"
        )
    if len(df) == 0:
        raise MfmError(f"{path} has no rows; add one row per labelled {level}")
    return pd.DataFrame({"id": df[id_col].astype(str).to_numpy(), target: values}), level, kind


def _row_error(path: Path, bad: np.ndarray, message: str) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
        raise MfmError(f"{path} row {rows[0]}{more}: {message}")


def resolve_task(
    city: City,
    task: str | None,
    labels: Path | str | None,
    level: str | None,
    kind: str | None,
) -> tuple[str, str, str, pd.DataFrame, str]:
    """(name, level, kind, labels frame, source) of a bundle task or an external labels file."""
    if labels is not None:
        df, level, kind = read_labels_file(labels, level, kind)
        return task or Path(labels).stem, level, kind, df, str(labels)
    have = ", ".join(sorted(city.labels)) or "none"
    if task is None:
        raise MfmError(f"no task given; pass --task NAME (tasks of city {city.name!r}: {have})")
    if task not in city.labels:
        hint = "" if city.labels else "; or pass --labels FILE.csv with --level and --kind"
        raise MfmError(f"unknown task {task!r}; available tasks: {have}{hint}")
    spec = city.labels[task]
    for given, actual, flag in ((level, spec.level, "--level"), (kind, spec.kind, "--kind")):
        if given is not None and given != actual:
            raise MfmError(f"task {task!r} is {actual} in city.toml; drop {flag} {given}")
    return task, spec.level, spec.kind, city.read_labels(task), str(spec.path)


# --------------------------------------------------------------------------- metrics


def _pair(values: Sequence[float] | np.ndarray) -> list[float | None]:
    """``[mean, std]`` over runs, ignoring NaN; None where undefined."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).any():
        return [None, None]
    arr = arr[np.isfinite(arr)]
    return [float(arr.mean()), float(arr.std())]


def _num(x: float) -> int | float:
    """An int when integral, else rounded to 3 decimals."""
    return round(x) if math.isclose(x, round(x), abs_tol=1e-9) else round(float(x), 3)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R2 (NaN when the test part has fewer than 2 items)."""
    r2 = float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan")
    return {
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": r2,
    }


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """F1 of class codes ``0..n_classes-1``: (macro, weighted, per class [C], support [C]).

    Macro and weighted F1 equal scikit-learn's ``f1_score`` (macro over the classes in
    ``y_true`` or ``y_pred``); per-class F1 is NaN for a class neither true nor predicted.
    """
    tp = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    support = np.bincount(y_true, minlength=n_classes)
    predicted = np.bincount(y_pred, minlength=n_classes)
    f1 = 2 * tp / np.maximum(support + predicted, 1)
    present = (support + predicted) > 0
    macro = float(f1[present].mean())
    weighted = float((f1 * support).sum() / max(support.sum(), 1))
    return macro, weighted, np.where(present, f1, np.nan), support


def score_method(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    splits: list[IndexPair],
    probe: str,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    """Fit and score one method's features on every split: (result, chosen params)."""
    params: list[Any] = []
    runs: list[Any] = []
    classes = None
    if kind == "classification":
        classes, y = np.unique(y, return_inverse=True)
    for r, (tr, te) in enumerate(splits):
        g = groups[tr] if groups is not None else None
        est, param = fit_probe(x[tr], y[tr], kind, probe, groups=g, seed=seed + r)
        params.append(param)
        pred = est.predict(x[te])
        if classes is None:
            runs.append(regression_metrics(y[te], pred))
        else:
            runs.append(classification_metrics(y[te], pred, len(classes)))
    if classes is None:
        return {m: _pair([run[m] for run in runs]) for m in ("rmse", "mae", "r2")}, params
    f1 = np.stack([run[2] for run in runs])  # [runs, C]
    support = np.stack([run[3] for run in runs]).astype(np.float64)
    mean_support = support.mean(axis=0)
    order = sorted(np.flatnonzero(mean_support > 0), key=lambda c: (-mean_support[c], classes[c]))
    per_class = {
        str(classes[c]): {"f1": _pair(f1[:, c]), "support": _num(mean_support[c])} for c in order
    }
    result = {
        "macro_f1": _pair([run[0] for run in runs]),
        "weighted_f1": _pair([run[1] for run in runs]),
        "per_class": per_class,
    }
    return result, params


def margin(results: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """mfm against the best baseline on the headline metric (R2 or macro F1).

    ``{"metric", "best", "value": mfm mean - best mean, "std": the larger of the two
    stds, "beyond_std": |value| > std}``; None without baselines or an undefined metric.
    """
    metric = "r2" if kind == "regression" else "macro_f1"
    mine = results.get("mfm", {}).get(metric)
    others = {
        m: r[metric]
        for m, r in results.items()
        if m != "mfm" and r.get(metric) and r[metric][0] is not None
    }
    if not mine or mine[0] is None or not others:
        return None
    best = max(others, key=lambda m: others[m][0])
    value = mine[0] - others[best][0]
    std = max(mine[1] or 0.0, others[best][1] or 0.0)
    return {
        "metric": metric,
        "best": best,
        "value": value,
        "std": std,
        "beyond_std": bool(abs(value) > std),
    }


# --------------------------------------------------------------------------- evaluate


def _check_args(
    split: str, runs: int, probe: str, baselines: Sequence[str], test_size: float
) -> None:
    if split not in SPLITS:
        raise MfmError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if probe not in GRIDS:
        raise MfmError(f"unknown probe {probe!r}; use one of: {', '.join(GRIDS)}")
    if runs < 1:
        raise MfmError(f"--runs must be at least 1, not {runs}")
    if not 0 < test_size < 1:
        raise MfmError(f"--test-size must be between 0 and 1, not {test_size}")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise MfmError(f"unknown baseline {unknown[0]!r}; use any of: {', '.join(BASELINES)}")


@dataclass(frozen=True)
class _Sources:
    """Where an evaluation's baselines come from."""

    run_dir: Path | None
    """raw / untrained come from its ``baselines.npz``; None: they are missing (``why``)."""
    text_options: Mapping[str, Any]
    """The osm text options of the ``text`` baseline."""
    cache: FeatureCache
    """The feature cache the ``text`` baseline reads (and fills)."""
    why: str = ""
    """Why raw / untrained are missing when ``run_dir`` is None."""


def _run_sources(run: RunDir) -> _Sources:
    """The baselines of a run: its references, text options and feature cache."""
    return _Sources(run.path, run.text_options, run.cache)


def _baselines(
    names: Sequence[str],
    sources: _Sources,
    city: City,
    level: str,
    rows: np.ndarray,
    dim: int,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Baseline features of the labelled items (``rows`` index the city layer), and why
    each baseline that cannot be computed is missing."""
    out: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    for b in names:
        if b in REFERENCES:
            if sources.run_dir is None:
                missing[b] = sources.why
                continue
            feats = reference_features(sources.run_dir, b, level)
            if feats is None:
                missing[b] = f"run has no {b}_{level} in {BASELINE_FILE}; re-run `mfm run`"
            else:
                out[b] = feats[rows]
        elif b == "counts":
            out[b] = counts_features(city, level)[rows]
        elif b == "text" and not city.has("pois"):
            missing[b] = f"{city.root} has no pois layer: no POI texts to embed"
        elif b == "text":
            out[b] = text_features(city, level, sources.text_options, sources.cache)[rows]
        else:
            out[b] = random_features(len(rows), dim, seed)
    return out, missing


def _score(
    city: City,
    resolved: tuple[str, str, str, pd.DataFrame, str],
    emb_ids: np.ndarray,
    emb: np.ndarray,
    sources: _Sources,
    where: str,
    *,
    split: str,
    runs: int,
    probe: str,
    baselines: Sequence[str],
    seed: int,
    test_size: float,
) -> dict[str, Any]:
    """Probe ``emb`` (rows ``emb_ids``) and the baselines on one resolved task; the result
    of ``evaluate``. ``where`` names the embeddings in errors (``run DIR`` or a file)."""
    name, level, kind, frame, source = resolved
    layer = _LAYER[level]
    ids_of_city = city_ids(city, level)

    label_ids = frame["id"].astype(str).to_numpy()
    emb_row = pd.Series(np.arange(len(emb_ids)), index=emb_ids).reindex(label_ids).to_numpy()
    city_row = pd.Series(np.arange(len(ids_of_city)), index=ids_of_city).reindex(label_ids)
    city_row = city_row.to_numpy()
    keep = ~np.isnan(emb_row) & ~np.isnan(city_row)
    emb_row, city_row = emb_row[keep].astype(np.int64), city_row[keep].astype(np.int64)
    y = frame[KINDS[kind]].to_numpy()[keep]
    y = y.astype(np.float64) if kind == "regression" else y.astype(str)
    if len(y) < MIN_ITEMS:
        raise MfmError(
            f"only {len(y)} of {len(frame)} labels of {name!r} ({source}) match {level} ids of "
            f"{where}; labels must use the {LEVELS[level]} values of city {city.name!r}"
        )

    base, missing = _baselines(baselines, sources, city, level, city_row, emb.shape[1], seed)
    feats = {"mfm": emb[emb_row], **base}

    groups = spatial_blocks(city.xy(layer)[city_row]) if split == "spatial" else None
    splits = make_splits(split, len(y), runs, test_size, seed, groups)
    results: dict[str, Any] = {}
    selected: dict[str, list[Any]] = {}
    with threadpool_limits(limits=1, user_api="blas"):  # small problems: threads only thrash
        for method, x in feats.items():
            results[method], selected[method] = score_method(
                x.astype(np.float64), y, kind, splits, probe, seed, groups
            )
    return {
        "task": name,
        "level": level,
        "kind": kind,
        "split": split,
        "runs": runs,
        "probe": probe,
        "results": results,
        "n": len(y),
        "dropped": int((~keep).sum()),
        "n_train": _num(float(np.mean([len(tr) for tr, _ in splits]))),
        "n_test": _num(float(np.mean([len(te) for _, te in splits]))),
        "test_size": test_size,
        "seed": seed,
        "labels": source,
        "selected": selected,
        "missing": missing,
        "margin": margin(results, kind),
    }


def evaluate(
    run_dir: Path | str,
    task: str | None = None,
    *,
    labels: Path | str | None = None,
    level: str | None = None,
    kind: str | None = None,
    split: str = "random",
    runs: int = 10,
    probe: str = DEFAULT_PROBE,
    baselines: Sequence[str] = BASELINES,
    seed: int = 0,
    test_size: float = 0.2,
    city: Path | str | None = None,
) -> dict[str, Any]:
    """Probe a run's frozen embeddings on one labelled task, with baselines on the same splits.

    Args:
        run_dir: A directory written by ``mfm run``.
        task: A ``[labels.<task>]`` name of the run's city (or the name for ``labels``).
        labels: A labels CSV outside the bundle (``region_id``/``poi_id`` then
            ``value``/``label``), used instead of a bundle task.
        level: ``region`` or ``poi`` for ``labels`` (inferred from its columns if None).
        kind: ``regression`` or ``classification`` for ``labels`` (inferred if None).
        split: ``random`` (the paper's) or ``spatial`` (whole grid blocks go to test).
        runs: Number of seeded splits; metrics are ``[mean, std]`` over them.
        probe: ``ridge`` (default: the standard linear probe, closed-form and fast),
            ``rf`` or ``mlp``.
        baselines: Any of ``raw``, ``untrained`` (from the run's ``baselines.npz``),
            ``counts``, ``text``, ``random``.
        seed: Seed of the splits, the validation splits and the random baseline.
        test_size: Share of items (random) or blocks (spatial) held out per run.

    Labels whose id has no embedding row are dropped (counted in ``dropped``); regions
    without POIs are kept, with whatever embedding the run wrote for them.

    Returns:
        ``{"task", "level", "kind", "split", "runs", "probe", "results": {method: metrics},
        "n", "dropped", "n_train", "n_test", ...}``; see ``mfm.eval``.

    Raises:
        MfmError: Unknown task (the message lists the tasks), a bad labels file, bad options.
    """
    _check_args(split, runs, probe, baselines, test_size)
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    city = run.city(city)
    resolved = resolve_task(city, task, labels, level, kind)
    emb_ids, emb = _embeddings(run, resolved[1])
    return _score(
        city,
        resolved,
        emb_ids,
        emb,
        _run_sources(run),
        f"run {run_dir}",
        split=split,
        runs=runs,
        probe=probe,
        baselines=baselines,
        seed=seed,
        test_size=test_size,
    )


def embeddings_city(table: EmbeddingTable, city: City | Path | str | None = None) -> City:
    """The city to score ``table`` in: ``city``, else the city of the run it sits in."""
    if isinstance(city, City):
        return city
    if city is not None:
        if not (Path(city) / "city.toml").is_file():
            raise MfmError(
                f"--city {city} is not a city bundle (no city.toml); pass the bundle whose "
                f"ids {table.source} holds"
            )
        return City.load(city)
    if table.run_dir is not None:
        return RunDir(table.run_dir).city()
    raise MfmError(
        f"no city to score {table.source} in; pass --city BUNDLE (the bundle whose ids it holds)"
    )


def _table_sources(
    table: EmbeddingTable,
    city: City,
    level: str,
    text_options: Mapping[str, Any] | None,
    cache: FeatureCache | Path | str | None,
) -> _Sources:
    """Baselines of a table: a run's when it sits in one trained on ``city``; otherwise
    raw / untrained are missing and ``text`` uses the default osm options and cache."""
    cache = cache if isinstance(cache, FeatureCache | None) else FeatureCache(Path(cache))
    run = None
    if table.run_dir is not None:
        source = RunDir(table.run_dir)
        run = _run_sources(source)
        recorded = source.manifest.city.hashes.get(_LAYER[level])
        if recorded is not None and recorded != city.fingerprint(_LAYER[level]):
            why = (
                f"run {table.run_dir} next to {table.source} was trained on another city "
                f"(its {_LAYER[level]} differ from {city.root}'s)"
            )
            run = _Sources(None, run.text_options, run.cache, why)
    if run is None:
        why = f"needs a run's {BASELINE_FILE}; {table.source} does not sit in a run directory"
        run = _Sources(None, {}, FeatureCache(default_cache_dir()), why)
    return _Sources(
        run.run_dir,
        run.text_options if text_options is None else text_options,
        run.cache if cache is None else cache,
        run.why,
    )


def evaluate_embeddings(
    embeddings: EmbeddingSource | EmbeddingTable,
    city: City | Path | str | None = None,
    task: str | None = None,
    *,
    ids: Path | str | None = None,
    id_column: str | None = None,
    column: str | None = None,
    labels: Path | str | None = None,
    level: str | None = None,
    kind: str | None = None,
    split: str = "random",
    runs: int = 10,
    probe: str = DEFAULT_PROBE,
    baselines: Sequence[str] = BASELINES,
    seed: int = 0,
    test_size: float = 0.2,
    text_options: Mapping[str, Any] | None = None,
    cache: FeatureCache | Path | str | None = None,
) -> dict[str, Any]:
    """Probe any embedding table on one labelled task of ``city``, as ``evaluate`` does.

    Args:
        embeddings: A file, DataFrame or ``(ids, array)`` (see
            :func:`read_embedding_table`, which ``ids``, ``id_column`` and ``column`` are
            passed to), or an :class:`EmbeddingTable` already read.
        city: The bundle whose ids the table holds; default: the city of the run the file
            sits in.
        task, labels, level, kind, split, runs, probe, baselines, seed, test_size: As for
            ``evaluate``; the task must be at the table's level (region or poi, told by its
            id column or by which ids of the city it holds).
        text_options: osm text options of the ``text`` baseline (default: the run's, else
            the osm defaults).
        cache: The feature cache of the ``text`` baseline (default: the run's, else
            ``$MFM_CACHE``).

    A file inside a run directory (``manifest.json`` and ``baselines.npz`` next to it) of
    the same city uses that run's ``raw`` / ``untrained`` baselines, text options and
    cache, so that ``RUN_DIR/region_embeddings.parquet`` scores exactly as ``evaluate(RUN_DIR)``;
    any other table reports ``raw`` and ``untrained`` under ``missing``.

    Returns:
        The ``evaluate`` result; the table's scores are under ``results["mfm"]``.

    Raises:
        MfmError: A bad table (see :func:`read_embedding_table`), ids not of ``city``, a task
            at the other level, and what ``evaluate`` raises.
    """
    _check_args(split, runs, probe, baselines, test_size)
    table = (
        embeddings
        if isinstance(embeddings, EmbeddingTable)
        else read_embedding_table(embeddings, ids=ids, id_column=id_column, column=column)
    )
    city = embeddings_city(table, city)
    emb_level = table.level(city)
    resolved = resolve_task(city, task, labels, level, kind)
    if resolved[1] != emb_level:
        raise MfmError(
            f"task {resolved[0]!r} is {resolved[1]}-level but {table.source} holds "
            f"{emb_level} embeddings; pass {resolved[1]} embeddings or a {emb_level} task"
        )
    return _score(
        city,
        resolved,
        table.ids,
        table.features,
        _table_sources(table, city, emb_level, text_options, cache),
        table.source,
        split=split,
        runs=runs,
        probe=probe,
        baselines=baselines,
        seed=seed,
        test_size=test_size,
    )


def write_eval(
    run_dir: Path | str | None, result: dict[str, Any], *, out: Path | str | None = None
) -> tuple[Path, Path]:
    """Write ``<task>.json`` and ``.md`` atomically into ``out`` (default ``RUN_DIR/eval``);
    return both paths."""
    from mfm.eval.table import markdown_table

    if out is None:
        if run_dir is None:
            raise ValueError("write_eval needs run_dir or out")
        out = Path(run_dir) / "eval"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", str(result["task"])).lstrip(".") or "task"
    json_path = write_json(out / f"{stem}.json", result)
    md_path = write_text(out / f"{stem}.md", markdown_table(result))
    return json_path, md_path
