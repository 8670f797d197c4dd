"""``ablate``: train and evaluate a matrix of runs on one city (the paper's Table III).

Each variant is a normal run directory ``OUT/<variant>/`` with its ``eval/<task>.json``.
A variant whose directory already holds a finished run is not trained again, and an
evaluation already written with the same settings is reused, so a rerun continues an
interrupted ablation. Every variant uses the same feature cache, so frozen backbone
features are computed once. The table goes to ``OUT/ablation.{md,csv,png,json}``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfm.core.atomic import write_text
from mfm.core.bundle.city import City
from mfm.core.cache import default_cache_dir
from mfm.core.config import RunConfig, make_config
from mfm.core.constants import RUN_MANIFEST
from mfm.core.embed import write_json
from mfm.core.errors import MfmError
from mfm.core.progress import log
from mfm.core.scales import Scale
from mfm.eval.baselines import BASELINES
from mfm.eval.evaluate import evaluate, write_eval
from mfm.eval.table import cell

DROPS = ("plugins", "scales")
FULL = "full"
HEADLINE: dict[str, tuple[tuple[str, str], ...]] = {
    "regression": (("r2", "R2"), ("rmse", "RMSE")),
    "classification": (("macro_f1", "macro F1"),),
}
"""Metrics shown per task kind; the first is the headline (the bar chart's)."""
LOWER_IS_BETTER = {"rmse", "mae"}
FILES = ("ablation.md", "ablation.csv", "ablation.png", "ablation.json")


@dataclass
class Variant:
    """One run of the ablation: a plugin set and a scale set."""

    name: str
    plugins: list[str] | None
    scales: list[Scale]


# --------------------------------------------------------------------------- variants


def supported_plugins(city: City) -> list[str]:
    """Installed modality plugins with at least one modality whose layers the city has."""
    from mfm.core.plugins import load_registry

    registry = load_registry()
    return [
        name
        for name in registry.modality_plugins
        if any(
            all(city.has(layer) for layer in cls.layers)
            for cls in registry.plugins[name].modalities.values()
        )
    ]


def _plugin_list(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return [p.strip() for p in items if p.strip()]


def _dir_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name).lstrip(".") or "variant"


def plan_variants(
    city: City,
    drop: str | None,
    variants: str | Sequence[str] | None,
    base_plugins: str | Sequence[str] | None,
    config: RunConfig,
) -> list[Variant]:
    """The variants to run, the full set first.

    Args:
        city: The city (decides which plugins and scales can run).
        drop: ``plugins`` or ``scales``: the full set, then each one left out in turn.
        variants: Plugin sets instead, ``"osm,svi;osm,svi,sat"`` or a list of such sets.
        base_plugins: The full plugin set (default: every installed plugin the city supports).
        config: The base run config (its scales are the full scale set).

    Raises:
        MfmError: Both or neither of ``drop`` / ``variants``, an unknown ``drop``, or
            nothing to drop.
    """
    if drop is not None and variants is not None:
        raise MfmError("pass either --drop or --variants, not both")
    if drop is None and variants is None:
        raise MfmError("nothing to ablate; pass --drop plugins|scales or --variants 'a,b;a,b,c'")
    if variants is not None:
        sets = variants.split(";") if isinstance(variants, str) else list(variants)
        out: list[Variant] = []
        for s in sets:
            plugins = _plugin_list(s)
            if plugins:
                out.append(Variant(_dir_name("+".join(plugins)), plugins, list(config.scales)))
        if not out:
            raise MfmError(f"--variants {variants!r} names no plugin set; use 'osm;osm,svi'")
        names = [v.name for v in out]
        if len(set(names)) != len(names):
            raise MfmError(f"--variants {variants!r} lists a plugin set twice; list each once")
        return out
    if drop not in DROPS:
        raise MfmError(f"--drop {drop!r} is not valid; use one of: {', '.join(DROPS)}")
    full = _plugin_list(base_plugins) if base_plugins is not None else supported_plugins(city)
    if not full:
        raise MfmError(f"no installed modality plugin supports city {city.name!r}")
    scales = list(config.scales)
    out = [Variant(FULL, full, scales)]
    if drop == "plugins":
        if len(full) < 2:
            raise MfmError(f"only one plugin ({full[0]}) to ablate; pass --base-plugins a,b")
        out += [Variant(f"no-{p}", [q for q in full if q != p], scales) for p in full]
        return out
    from mfm.core.pipeline import plan_run

    plan = plan_run(config.model_copy(update={"plugins": full}), city)
    active = sorted({e.scale for e in plan.entries if e.skip is None})
    if len(active) < 2:
        raise MfmError(
            f"only {len(active)} scale slot(s) train on this city; nothing to drop by scale"
        )
    out += [Variant(f"no-{s.label}", full, [t for t in scales if t != s]) for s in active]
    return out


# --------------------------------------------------------------------------- runs


def _train(variant: Variant, base: RunConfig, out: Path) -> str | None:
    """Train the variant unless its run is finished; the MfmError message if it fails."""
    if (out / RUN_MANIFEST).is_file():
        log(f"ablate: {variant.name}: reusing the finished run in {out}")
        return None
    from mfm.core.pipeline import run

    config = base.model_copy(
        update={"out": out, "plugins": variant.plugins, "scales": variant.scales}
    )
    log(f"ablate: {variant.name}: training ({', '.join(variant.plugins or ['all'])})")
    try:
        run(RunConfig.model_validate(config.model_dump()), resume=out.exists())
    except MfmError as exc:
        log(f"ablate: {variant.name} failed: {exc}")
        return str(exc)
    return None


def _evaluation(run_dir: Path, task: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``evaluate`` with ``settings``, reusing ``eval/<task>.json`` written with them."""
    path = run_dir / "eval" / f"{_dir_name(task)}.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        same = all(old.get(k) == v for k, v in settings.items() if k != "baselines")
        if same and set(settings["baselines"]) <= set(old.get("results", {})):
            return old
    result = evaluate(run_dir, task, **settings)
    write_eval(run_dir, result)
    return result


def _metrics(result: dict[str, Any], method: str) -> dict[str, list[float | None]]:
    res = result["results"].get(method, {})
    return {key: res.get(key, [None, None]) for key, _ in HEADLINE[result["kind"]]}


# --------------------------------------------------------------------------- ablate


def ablate(
    city: Path | str | None,
    out_dir: Path | str,
    *,
    drop: str | None = None,
    variants: str | Sequence[str] | None = None,
    tasks: Sequence[str] | str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    runs: int = 10,
    split: str = "random",
    probe: str = "ridge",
    quiet: bool = True,
    base_plugins: str | Sequence[str] | None = None,
    config: Path | str | None = None,
    cache_dir: Path | str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train and evaluate every variant on one city; write the ablation table.

    Args:
        city: City bundle (None: the small synthetic city).
        out_dir: Where each variant's run dir and ``ablation.*`` go.
        drop: ``plugins`` (full set, then each plugin left out) or ``scales`` (all scale
            slots, then each slot that trains left out).
        variants: Plugin sets instead of ``drop``: ``"osm;osm,svi"`` or a list of sets.
        tasks: Task names (list or ``"a,b"``; default: every task of the city).
        epochs: Epochs per stage (default: the config's).
        seed: Seed of training and of the evaluation splits.
        runs: Evaluation repetitions per task.
        split: ``random`` or ``spatial``.
        probe: ``ridge``, ``rf`` or ``mlp``.
        quiet: Log lines instead of progress bars.
        base_plugins: The full plugin set for ``drop`` (default: all the city supports).
        config: A TOML run config shared by every variant.
        cache_dir: Feature cache shared by every variant (default: ``$MFM_CACHE``).
        **overrides: Further ``RunConfig`` options for every variant (dim, batch_size...).

    Returns:
        The table data (also ``OUT/ablation.json``): ``{"city", "settings", "tasks":
        [{name, level, kind, metrics}], "rows": [{"variant", "kind" (variant|baseline),
        "plugins", "scales", "run_dir", "error", "results": {task: {metric: [mean, std]}
        or {"error": message}}}], "files"}``.

    Raises:
        MfmError: Bad options or an unknown task (a failing variant is recorded instead).
    """
    out_dir = Path(out_dir)
    base = make_config(
        Path(config) if config is not None else None,
        city=city,
        epochs=epochs,
        seed=seed,
        quiet=quiet,
        cache_dir=cache_dir,
        **overrides,
    )
    base.cache_dir = Path(base.cache_dir or default_cache_dir()).resolve()  # shared by all
    if base.city is None:
        from mfm.cities.default import default_city

        base.city = default_city(cache_dir=base.cache_dir)
    root = Path(base.city)
    the_city = City.load(root)
    names = _task_names(the_city, tasks)
    plan = plan_variants(the_city, drop, variants, base_plugins, base)
    settings = {"split": split, "runs": runs, "probe": probe, "seed": seed}
    settings["baselines"] = list(BASELINES)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    reference: dict[str, dict[str, Any]] = {}  # task -> eval result holding the baselines
    for v in plan:
        run_dir = out_dir / v.name
        row: dict[str, Any] = {
            "variant": v.name,
            "kind": "variant",
            "plugins": v.plugins,
            "scales": [s.label for s in v.scales],
            "run_dir": str(run_dir),
            "error": _train(v, base, run_dir),
            "results": {},
        }
        if row["error"] is None:
            for t in names:
                try:
                    result = _evaluation(run_dir, t, settings)
                except MfmError as exc:
                    log(f"ablate: {v.name}: task {t} failed: {exc}")
                    row["results"][t] = {"error": str(exc)}
                    continue
                row["results"][t] = _metrics(result, "mfm")
                reference.setdefault(t, result)
        rows.append(row)
    for b in BASELINES:
        rows.append(
            {
                "variant": b,
                "kind": "baseline",
                "plugins": None,
                "scales": None,
                "run_dir": None,
                "error": None,
                "results": {t: _metrics(r, b) for t, r in reference.items()},
            }
        )
    table = {
        "city": {"name": the_city.name, "root": str(root)},
        "settings": {
            **{k: v for k, v in settings.items() if k != "baselines"},
            "drop": drop,
            "epochs": base.epochs,
            "dim": base.dim,
        },
        "tasks": [
            {
                "name": t,
                "level": the_city.labels[t].level,
                "kind": the_city.labels[t].kind,
                "metrics": [k for k, _ in HEADLINE[the_city.labels[t].kind]],
            }
            for t in names
        ],
        "rows": rows,
        "files": {f.split(".")[1]: str(out_dir / f) for f in FILES},
    }
    write_table(table, out_dir)
    return table


def _task_names(city: City, tasks: Sequence[str] | str | None) -> list[str]:
    have = list(city.labels)
    if tasks is None:
        if not have:
            raise MfmError(f"city {city.name!r} has no labelled task; add [labels.*] to city.toml")
        return have
    names = _plugin_list(tasks)
    unknown = [t for t in names if t not in city.labels]
    if unknown or not names:
        raise MfmError(
            f"unknown task {unknown[0] if unknown else tasks!r}; tasks of city "
            f"{city.name!r}: {', '.join(have) or 'none'}"
        )
    return names


# --------------------------------------------------------------------------- output


def _label(metric: str) -> str:
    return dict(pair for pairs in HEADLINE.values() for pair in pairs)[metric]


def _columns(table: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["name"], m) for t in table["tasks"] for m in t["metrics"]]


def _cell(row: dict[str, Any], task: str, metric: str) -> str:
    if row["error"] is not None:
        return "failed"
    res = row["results"].get(task)
    if res is None:
        return "-"
    if "error" in res:
        return "error"
    return cell(res.get(metric))


def _best(table: dict[str, Any], task: str, metric: str) -> set[int]:
    """Rows holding the best shown mean of a column (none when all tie)."""
    shown = {}
    for i, row in enumerate(table["rows"]):
        res = row["results"].get(task) or {}
        pair = res.get(metric) if "error" not in res and row["error"] is None else None
        if pair and pair[0] is not None:
            shown[i] = round(pair[0], 3)
    if len(set(shown.values())) < 2:
        return set()
    top = (min if metric in LOWER_IS_BETTER else max)(shown.values())
    return {i for i, v in shown.items() if v == top}


def _note(row: dict[str, Any]) -> str:
    if row["error"] is not None:
        return f"run failed: {row['error']}"
    errs = [f"{t}: {r['error']}" for t, r in row["results"].items() if "error" in r]
    return "; ".join(errs)


def _scales_text(scales: list[str] | None) -> str:
    if scales is None:
        return "-"
    return "all" if len(scales) == len(Scale) else ",".join(scales)


def table_cells(table: dict[str, Any]) -> tuple[list[str], list[list[str]], list[set[int]]]:
    """(header, rows of cells, per row the column indexes holding the best value)."""
    cols = _columns(table)
    header = ["variant", "plugins", "scales", *(f"{t} {_label(m)}" for t, m in cols), "note"]
    best_rows = [_best(table, t, m) for t, m in cols]
    cells: list[list[str]] = []
    best: list[set[int]] = []
    for i, row in enumerate(table["rows"]):
        baseline = row["kind"] == "baseline"
        plugins = "-" if baseline else ",".join(row["plugins"] or ["all"])
        scales = "-" if baseline else _scales_text(row["scales"])
        name = f"{row['variant']} (baseline)" if baseline else row["variant"]
        values = [_cell(row, t, m) for t, m in cols]
        cells.append([name, plugins, scales, *values, _note(row)])
        best.append({3 + j for j, b in enumerate(best_rows) if i in b})
    return header, cells, best


def markdown(table: dict[str, Any]) -> str:
    """The ablation as a markdown document (title, settings line, table)."""
    s = table["settings"]
    header, cells, best = table_cells(table)
    lines = [
        f"# Ablation on {table['city']['name']}",
        "",
        f"{s['split']} split, {s['runs']} runs, {s['probe']} probe, epochs per stage: "
        f"{s['epochs']}, seed {s['seed']}; cells are mean (std) over the runs, best in bold.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 4) + ["---"]) + "|",
    ]
    for row, b in zip(cells, best, strict=True):
        shown = [f"**{v}**" if i in b else v for i, v in enumerate(row)]
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in shown) + " |")
    return "\n".join(lines) + "\n"


def csv_text(table: dict[str, Any]) -> str:
    """One row per variant; ``<task>_<metric>_mean`` and ``_std`` columns."""
    cols = _columns(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    stats = [f"{t}_{m}_{s}" for t, m in cols for s in ("mean", "std")]
    writer.writerow(["variant", "kind", "plugins", "scales", *stats, "error"])
    for row in table["rows"]:
        values: list[Any] = []
        for t, m in cols:
            res = row["results"].get(t) or {}
            pair = res.get(m) or [None, None]
            values += ["" if v is None else f"{v:.6g}" for v in pair]
        writer.writerow(
            [
                row["variant"],
                row["kind"],
                ",".join(row["plugins"] or []),
                ",".join(row["scales"] or []),
                *values,
                _note(row),
            ]
        )
    return buf.getvalue()


def write_table(table: dict[str, Any], out_dir: Path | str) -> None:
    """Write ``ablation.md``, ``.csv``, ``.png`` and ``.json`` atomically into ``out_dir``."""
    from mfm.plots import ablation_bars

    out_dir = Path(out_dir)
    write_text(out_dir / "ablation.md", markdown(table))
    write_text(out_dir / "ablation.csv", csv_text(table))
    groups = [(t["name"], _label(t["metrics"][0])) for t in table["tasks"]]
    bars = []
    for row in table["rows"]:
        if row["error"] is not None:
            continue
        pairs = []
        for t in table["tasks"]:
            res = row["results"].get(t["name"]) or {}
            pairs.append(None if "error" in res else res.get(t["metrics"][0]))
        bars.append((row["variant"], pairs, row["kind"] == "baseline"))
    s = table["settings"]
    title = (
        f"ablation on {table['city']['name']} ({s['split']} split, {s['runs']} runs, "
        f"{s['probe']} probe)"
    )
    ablation_bars(groups, bars, out_dir / "ablation.png", title=title)
    write_json(out_dir / "ablation.json", table)
