"""``report``: one self-contained HTML page about a run (maps, predictions, losses, tables).

``RUN_DIR/report/index.html`` embeds every figure as a base64 data URI (the PNGs are also
kept beside it), so the page can be mailed or attached as one file::

    from mfm.eval.report import report
    report("runs/demo")  # runs/demo/report/index.html
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold

from mfm.core.atomic import write_text
from mfm.core.city import City
from mfm.core.constants import POI_EMBEDDINGS, REGION_EMBEDDINGS, REGION_ID
from mfm.core.embed import read_embeddings
from mfm.core.errors import MfmError
from mfm.core.progress import log
from mfm.eval.evaluate import (
    KINDS,
    LEVELS,
    evaluate,
    read_manifest,
    resolve_task,
    run_city,
    write_eval,
)
from mfm.eval.probes import DEFAULT_PROBE, fit_probe
from mfm.eval.splits import spatial_blocks
from mfm.eval.table import table_rows, title

FOLDS = 5
"""Folds of the out-of-fold predictions shown in the report."""

CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1f2328;
  font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 28px 48px; }
header { background: #1f3a5f; color: #fff; padding: 22px 28px; }
header .inner { max-width: 1320px; margin: 0 auto; padding: 0 28px; }
header h1 { margin: 0 0 6px; font-size: 24px; font-weight: 600; }
header .meta { display: flex; flex-wrap: wrap; gap: 6px 22px; font-size: 13px; opacity: .92; }
header .meta b { font-weight: 600; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 8px;
  padding: 18px 22px; margin: 18px 0; }
h2 { margin: 0 0 4px; font-size: 18px; font-weight: 600; }
h3 { margin: 18px 0 6px; font-size: 14px; font-weight: 600; }
p.note { margin: 0 0 12px; color: #57606a; font-size: 13px; }
.grid { display: grid; gap: 16px; align-items: start; }
.grid.two { grid-template-columns: minmax(0, 2.1fr) minmax(0, 1fr); }
.grid.half { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
figure { margin: 0; }
figure img { display: block; width: 100%; height: auto; border: 1px solid #eef0f3;
  border-radius: 4px; }
figure.narrow img { max-width: 760px; }
.grid.cards { margin: 18px 0; }
.grid.cards > section { margin: 0; height: 100%; }
.tables { display: flex; flex-wrap: wrap; gap: 4px 40px; }
.tables > div { flex: 0 1 auto; min-width: 0; max-width: 100%; }
figcaption { font-size: 12px; color: #57606a; margin-top: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 8px;
  font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e8eb; text-align: right;
  white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; border-bottom: 2px solid #d0d7de; }
th:first-child, td:first-child { text-align: left; }
th.left, td.left { text-align: left; }
td.text { text-align: left; white-space: normal; max-width: 420px; color: #57606a; }
table td.best { font-weight: 700; color: #116329; }
td.warn { color: #cf222e; font-weight: 600; }
tr.baseline td { color: #57606a; background: #fafbfc; }
tr.failed td { color: #a40e26; }
.error { color: #a40e26; }
"""


# --------------------------------------------------------------------------- helpers


def _img(path: Path, alt: str, caption: str = "", cls: str = "") -> str:
    """An ``<figure>`` with the PNG inlined as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    klass = f' class="{cls}"' if cls else ""
    return (
        f'<figure{klass}><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"{cap}</figure>"
    )


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    best: Sequence[set[int]] | None = None,
    row_classes: Sequence[str] | None = None,
    text_cols: set[int] | None = None,
    left: set[int] | None = None,
    warn: Sequence[set[int]] | None = None,
) -> str:
    """An HTML table; ``best[i]`` are the columns of row ``i`` to highlight, ``warn[i]``
    those to flag.

    ``text_cols`` wrap (long notes); they and the ``left`` columns are left-aligned.
    """
    out = ['<div class="scroll"><table><thead><tr>']
    left = (left or set()) | (text_cols or set())
    out += [
        f'<th class="left">{html.escape(h)}</th>' if j in left else f"<th>{html.escape(h)}</th>"
        for j, h in enumerate(header)
    ]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes else ""
        out.append(f'<tr class="{rc}">' if rc else "<tr>")
        for j, v in enumerate(row):
            classes = []
            if best and j in best[i]:
                classes.append("best")
            if warn and j in warn[i]:
                classes.append("warn")
            if text_cols and j in text_cols:
                classes.append("text")
            if left and j in left:
                classes.append("left")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f"<td{attr}>{html.escape(str(v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _section(heading: str, body: str, note: str = "") -> str:
    n = f'<p class="note">{note}</p>' if note else ""
    return f"<section><h2>{html.escape(heading)}</h2>{n}{body}</section>"


def _embeddings(run_dir: Path, manifest: dict[str, Any], level: str) -> tuple[Any, np.ndarray]:
    outputs = manifest.get("outputs", {})
    default = REGION_EMBEDDINGS if level == "region" else POI_EMBEDDINGS
    name = outputs.get(f"{level}_embeddings", default)
    path = run_dir / name if name else None
    if path is None or not path.is_file():
        raise MfmError(f"run {run_dir} has no {level} embeddings ({default}); re-run `mfm run`")
    return read_embeddings(path)


# --------------------------------------------------------------------------- predictions


def out_of_fold(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    *,
    probe: str = DEFAULT_PROBE,
    groups: np.ndarray | None = None,
    folds: int = FOLDS,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold predictions of the ``mfm.eval`` probe: each item predicted by a probe
    fitted (hyper-parameter chosen on its own validation split) without it.

    Args:
        x: Features ``[n, d]``.
        y: Targets ``[n]`` (values, or class labels).
        kind: ``regression`` or ``classification``.
        probe: ``ridge``, ``rf`` or ``mlp``.
        groups: Spatial block per item: whole blocks are held out (GroupKFold).
        folds: Number of folds (at most ``n``, or the number of blocks).
        seed: Seed of the folds and the probe.
    """
    n = len(y)
    if groups is not None and len(np.unique(groups)) >= 2:
        k = min(folds, len(np.unique(groups)))
        parts = GroupKFold(n_splits=k).split(x, groups=groups)
    else:
        groups = None
        parts = KFold(n_splits=min(folds, n), shuffle=True, random_state=seed).split(x)
    pred = np.empty(n, dtype=np.float64 if kind == "regression" else object)
    for f, (tr, te) in enumerate(parts):
        g = groups[tr] if groups is not None else None
        est, _ = fit_probe(x[tr], y[tr], kind, probe, groups=g, seed=seed + f)
        pred[te] = est.predict(x[te])
    return pred


def _default_task(city: City) -> str | None:
    """The first regression task of the city, else its first task, else None."""
    specs = list(city.labels.values())
    reg = [s.name for s in specs if s.kind == "regression"]
    return reg[0] if reg else (specs[0].name if specs else None)


def _prediction_figures(
    run_dir: Path,
    manifest: dict[str, Any],
    city: City,
    task: str,
    out: Path,
    probe: str,
    split: str,
    seed: int,
) -> str:
    """Maps of true vs predicted values and a scatter (or confusion matrix); HTML."""
    from mfm.plots import confusion_plot, prediction_maps, prediction_scatter

    name, level, kind, frame, _ = resolve_task(city, task, None, None, None)
    emb_frame, emb = _embeddings(run_dir, manifest, level)
    id_col = LEVELS[level]
    layer = city.regions if level == "region" else city.pois
    emb_row = {k: i for i, k in enumerate(emb_frame[id_col].astype(str))}
    city_row = {k: i for i, k in enumerate(layer[id_col].astype(str))}
    ids = frame["id"].astype(str).to_numpy()
    keep = np.array([i in emb_row and i in city_row for i in ids], dtype=bool)
    if keep.sum() < 2:
        raise MfmError(f"task {name!r}: fewer than 2 labels match the run's {level} ids")
    ids = ids[keep]
    y = frame[KINDS[kind]].to_numpy()[keep]
    y = y.astype(np.float64) if kind == "regression" else y.astype(str)
    x = emb[[emb_row[i] for i in ids]].astype(np.float64)
    rows = np.array([city_row[i] for i in ids])
    groups = spatial_blocks(city.xy(f"{level}s")[rows]) if split == "spatial" else None
    pred = out_of_fold(x, y, kind, probe=probe, groups=groups, seed=seed)

    shapes = layer.iloc[rows].to_crs(city.crs)
    background = city.regions.to_crs(city.crs) if level == "poi" and city.has("regions") else None
    label = f"{name}"
    maps = prediction_maps(
        shapes, y, pred, out / "predictions_map.png", kind=kind, label=label, background=background
    )
    how = f"{FOLDS}-fold out-of-fold predictions, {probe} probe, {split} folds, n={len(y)}"
    if kind == "regression":
        r2 = float(r2_score(y, pred))
        side = prediction_scatter(
            y, pred, out / "predictions_scatter.png", title=f"{name}: R2 = {r2:.3f}", label=name
        )
        side_html = _img(side, f"{name} predicted vs true", f"R2 {r2:.3f} over all folds")
    else:
        from mfm.eval.probes import macro_f1

        f1 = macro_f1(y, pred.astype(str))
        side = confusion_plot(
            y,
            pred.astype(str),
            out / "predictions_confusion.png",
            title=f"{name}: macro F1 = {f1:.3f}",
        )
        side_html = _img(side, f"{name} confusion matrix", f"macro F1 {f1:.3f} over all folds")
    body = f'<div class="grid two">{_img(maps, f"{name} true and predicted", how)}{side_html}</div>'
    return _section(
        f"Task {name}: predicted vs true",
        body,
        f"{level} {kind}; predictions of the frozen embeddings by the evaluation probe, "
        "each item predicted by a probe that never saw it. "
        + ("Shared colour scale." if kind == "regression" else "Shared class colours."),
    )


# --------------------------------------------------------------------------- eval tables


def _eval_results(
    run_dir: Path, runs: int, probe: str, split: str, seed: int, city: Path | str | None = None
) -> list[Any]:
    """``RUN_DIR/eval/*.json``, or evaluate every task of the city first and write them."""
    manifest = read_manifest(run_dir)
    order = list(run_city(manifest, run_dir, city).labels)  # the city's order, extras last
    found = sorted(
        (run_dir / "eval").glob("*.json"),
        key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem),
    )
    results: list[Any] = []
    for path in found:
        try:
            results.append(json.loads(path.read_text()))
        except ValueError:
            log(f"report: skipping unreadable {path}")
    if results:
        return results
    for task in order:
        try:
            result = evaluate(
                run_dir, task, split=split, runs=runs, probe=probe, seed=seed, city=city
            )
        except MfmError as exc:
            results.append({"task": task, "error": str(exc)})
            continue
        write_eval(run_dir, result)
        results.append(result)
    return results


def _eval_html(results: list[Any]) -> str:
    if not results:
        return _section("Evaluation", '<p class="note">The city has no labelled task.</p>')
    parts = []
    for r in results:
        if "error" in r:
            parts.append(
                f"<div><h3>{html.escape(str(r['task']))}</h3>"
                f'<p class="error">{html.escape(r["error"])}</p></div>'
            )
            continue
        header, rows, best = table_rows(r)
        parts.append(f"<div><h3>{html.escape(title(r))}</h3>{_table(header, rows, best)}</div>")
    return _section(
        "Evaluation",
        f'<div class="tables">{"".join(parts)}</div>',
        "Frozen embeddings (mfm) and baselines probed on the same splits; cells are "
        "mean (std) over the runs, best mean per row in green.",
    )


# --------------------------------------------------------------------------- ablation


def _ablation_dir(run_dir: Path, ablation: Path | str | None) -> Path | None:
    if ablation is None:
        parent = run_dir.resolve().parent
        return parent if (parent / "ablation.md").is_file() else None
    path = Path(ablation)
    if path.is_file():
        return path.parent
    if path.is_dir():
        return path
    raise MfmError(f"--ablation {path} not found; pass the directory written by `mfm ablate`")


def _ablation_html(where: Path) -> str:
    from mfm.eval.ablate import table_cells

    parts: list[str] = []
    note = f"From {where}."
    if (where / "ablation.json").is_file():
        table = json.loads((where / "ablation.json").read_text())
        header, rows, best = table_cells(table)
        classes = [
            "baseline" if r["kind"] == "baseline" else ("failed" if r["error"] else "")
            for r in table["rows"]
        ]
        s = table["settings"]
        note += (
            f" {s['split']} split, {s['runs']} runs, {s['probe']} probe, epochs per stage: "
            f"{s['epochs']}; mean (std), best per column in green."
        )
        parts.append(_table(header, rows, best, classes, {len(header) - 1}, {1, 2}))
    elif (where / "ablation.csv").is_file():
        with open(where / "ablation.csv", newline="") as fh:
            data = list(csv.reader(fh))
        if data:
            parts.append(_table(data[0], data[1:]))
    elif (where / "ablation.md").is_file():
        parts.append(f"<pre>{html.escape((where / 'ablation.md').read_text())}</pre>")
    if (where / "ablation.png").is_file():
        parts.append(_img(where / "ablation.png", "ablation bar chart", cls="narrow"))
    if not parts:
        raise MfmError(f"{where} holds no ablation.md/csv/json; run `mfm ablate` there first")
    return _section("Ablation", "".join(parts), html.escape(note))


# --------------------------------------------------------------------------- the page


def _header(manifest: dict[str, Any], city: City) -> str:
    cfg = manifest.get("config", {})
    stages = manifest.get("stages", [])
    mods = ", ".join(manifest.get("modalities", {})) or "-"
    stage_text = ", ".join(f"{s['name']} ({s['scale']})" for s in stages) or "none"
    wall = manifest.get("wall_seconds")
    device = manifest.get("device", {})
    items = [
        ("city", f"{city.name} ({manifest.get('city', {}).get('crs', city.crs)})"),
        ("modalities", mods),
        ("stages", stage_text),
        ("wall time", f"{wall:.1f} s" if isinstance(wall, int | float) else "-"),
        ("epochs", str(cfg.get("epochs", "-"))),
        ("dim", str(cfg.get("dim", "-"))),
        ("device", f"{device.get('type', '?')} x{device.get('world_size', 1)}"),
        ("created", str(manifest.get("created", "-"))),
    ]
    meta = "".join(f"<span><b>{k}</b> {html.escape(v)}</span>" for k, v in items)
    return (
        f'<header><div class="inner"><h1>UrbanMFM run: {html.escape(city.name)}</h1>'
        f'<div class="meta">{meta}</div></div></header>'
    )


def _stages_table(manifest: dict[str, Any]) -> str:
    rows = []
    for s in manifest.get("stages", []):
        losses = s.get("epoch_losses") or s.get("losses") or []
        rows.append(
            [
                s.get("name", "?"),
                s.get("scale", "?"),
                str(s.get("epochs", "-")),
                str(s.get("steps", "-")),
                f"{losses[0]:.4f}" if losses else "-",
                f"{losses[-1]:.4f}" if losses else "-",
                f"{s.get('seconds', 0.0):.1f}",
            ]
        )
    header = ["stage", "scale", "epochs", "steps", "first epoch loss", "last epoch loss", "s"]
    skipped = [p for p in manifest.get("plan", []) if p.get("skipped")]
    extra = ""
    if skipped:
        extra = "<h3>Skipped objectives</h3>" + _table(
            ["objective", "scale", "reason"],
            [[p["objective"], p["scale"], p["skipped"]] for p in skipped],
            left={1},
            text_cols={2},
        )
    return _table(header, rows, left={1}) + extra


def _health_table(manifest: dict[str, Any]) -> str:
    """Rows: after each stage; columns: every objective's loss (its chance level); a cell
    at or above :data:`NEAR_CHANCE` of chance is marked."""
    from mfm.core.trainer import NEAR_CHANCE

    stages = manifest.get("stages", [])
    names = list(dict.fromkeys(n for s in stages for n in s.get("health", {})))
    if not names:
        return "<p>This run records no objective health (a run older than the feature).</p>"
    rows, warn = [], []
    for s in stages:
        cells, flagged = [f"after {s.get('name', '?')}"], set()
        for j, n in enumerate(names, start=1):
            h = s.get("health", {}).get(n)
            cells.append("-" if h is None else f"{h['loss']:.3f} ({h['chance']:.3f})")
            if h is not None and h["loss"] >= NEAR_CHANCE * h["chance"]:
                flagged.add(j)
        rows.append(cells)
        warn.append(flagged)
    return _table(["", *names], rows, left={0}, warn=warn)


def report(
    run_dir: Path | str,
    *,
    task: str | None = None,
    ablation: Path | str | None = None,
    runs: int = 10,
    probe: str = DEFAULT_PROBE,
    split: str = "random",
    seed: int = 0,
    city: Path | str | None = None,
) -> Path:
    """Write ``RUN_DIR/report/index.html`` (self-contained) and the PNGs it embeds.

    Args:
        run_dir: A directory written by ``mfm run``.
        task: Task whose predictions are mapped (default: the city's first regression task).
        ablation: An ``mfm ablate`` output directory (or one of its files) to embed
            (default: ``RUN_DIR/../ablation.md``'s directory, when it exists).
        runs: Repetitions when the evaluation has to be run first (no ``eval/*.json``).
        probe: Probe of the out-of-fold predictions (and of a fresh evaluation).
        split: ``random`` or ``spatial`` folds / splits.
        seed: Seed of the folds and of a fresh evaluation.

    Returns:
        The path of ``index.html``.

    Raises:
        MfmError: Not a run directory, an unknown task, a missing ablation directory.
    """
    from mfm.plots import health_curves, loss_curves, pca_map

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    city_root = city
    city = run_city(manifest, run_dir, city_root)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    where = _ablation_dir(run_dir, ablation)
    task = task or _default_task(city)
    if task is not None and task not in city.labels:
        have = ", ".join(city.labels) or "none"
        raise MfmError(f"unknown task {task!r}; tasks of city {city.name!r}: {have}")
    sections: list[str] = []

    # (a) PCA map of the region embeddings
    pois = city.pois.to_crs(city.crs)
    if manifest.get("outputs", {}).get("region_embeddings"):
        frame, emb = _embeddings(run_dir, manifest, "region")
        shapes: gpd.GeoDataFrame = frame.to_crs(city.crs)
        what = f"{len(frame)} regions"
        if REGION_ID in frame and city.has("regions"):  # the city's own polygons, same order
            shapes = city.regions.set_index(REGION_ID).loc[frame[REGION_ID]].reset_index()
            shapes = shapes.to_crs(city.crs)
        pca = pca_map(shapes, emb, out / "embedding_pca.png", pois=pois)
    else:
        frame, emb = _embeddings(run_dir, manifest, "poi")
        what = f"{len(frame)} POIs (the run has no region embeddings)"
        pca = pca_map(frame.to_crs(city.crs), emb, out / "embedding_pca.png", title="POI PCA")
    pca_html = _section(
        "Embedding map",
        _img(pca, "PCA of the embeddings"),
        f"{what} coloured by the first three principal components of their embeddings "
        "(PC1 = red, PC2 = green, PC3 = blue, each min-max scaled): similar colours, similar "
        "embeddings. POIs drawn faintly on top.",
    )

    # (c) training losses
    curves = loss_curves(manifest.get("stages", []), out / "loss_curves.png")
    health = health_curves(manifest.get("stages", []), out / "health.png")
    train_html = _section(
        "Training",
        _img(curves, "training loss per stage") + _stages_table(manifest),
        "Loss per optimizer step of each stage (the paper's Fig. 4); stages run in order.",
    )
    sections.append(f'<div class="grid half cards">{pca_html}{train_html}</div>')
    health_html = _img(health, "objective health") if health is not None else ""
    sections.append(
        _section(
            "Objective health",
            health_html + _health_table(manifest),
            "Every objective's InfoNCE loss on a fixed batch of its items after every stage, "
            "with its chance level (log of the candidates per anchor) in brackets; red: at or "
            "above 95% of chance, i.e. the objective is (back) at chance.",
        )
    )

    # (b) one task: predicted vs true
    if task is not None:
        try:
            sections.append(
                _prediction_figures(run_dir, manifest, city, task, out, probe, split, seed)
            )
        except MfmError as exc:
            sections.append(
                _section(f"Task {task}", f'<p class="error">{html.escape(str(exc))}</p>')
            )

    # (d) evaluation and ablation tables
    sections.append(_eval_html(_eval_results(run_dir, runs, probe, split, seed, city_root)))
    if where is not None:
        sections.append(_ablation_html(where))

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>UrbanMFM report: {html.escape(city.name)}</title>"
        f"<style>{CSS}</style></head><body>{_header(manifest, city)}"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )
    return write_text(out / "index.html", page)
