"""``report``: one self-contained HTML page about a run (maps, predictions, losses, tables).

``RUN_DIR/report/index.html`` embeds every figure as a base64 data URI (the PNGs are also
kept beside it) and draws one interactive map pair per labelled task as inline SVG with a
small inline script (tooltips, a predicted/true toggle): no CDN, no network, so the page
works offline and can be mailed or attached as one file. ``index.html#map-<task>`` jumps
to a task's maps::

    from mfm.eval.report import report
    report("runs/demo")  # runs/demo/report/index.html
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold

from mfm.core.atomic import write_text
from mfm.core.bundle.city import City
from mfm.core.constants import REGION_ID
from mfm.core.embed import read_embeddings
from mfm.core.errors import MfmError
from mfm.core.progress import log
from mfm.core.rundir import RunDir, RunManifest
from mfm.eval.evaluate import (
    KINDS,
    LEVELS,
    evaluate,
    resolve_task,
    write_eval,
)
from mfm.eval.probes import DEFAULT_PROBE, fit_probe
from mfm.eval.splits import spatial_blocks
from mfm.eval.table import table_rows, title

if TYPE_CHECKING:
    from mfm.plots import MapFrame

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


def _embeddings(run: RunDir, level: str) -> tuple[Any, np.ndarray]:
    return read_embeddings(run.embeddings_file(level))


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


@dataclass
class TaskPredictions:
    """A task's labelled items with their out-of-fold predictions: what every map,
    tooltip and scatter of the task shows."""

    name: str
    level: str
    kind: str
    unit: str
    ids: np.ndarray
    y: np.ndarray
    pred: np.ndarray
    shapes: gpd.GeoDataFrame  # one row per item, in the bundle's metric CRS
    background: gpd.GeoDataFrame | None  # unlabelled regions, drawn grey beneath

    @property
    def label(self) -> str:
        """``name (unit)``, or the name alone."""
        return with_unit(self.name, self.unit)

    def score(self) -> tuple[str, float]:
        """(metric, value) over the pooled out-of-fold predictions: R2 or macro F1."""
        if self.kind == "regression":
            return "R2", float(r2_score(self.y, self.pred))
        from mfm.eval.probes import macro_f1

        return "macro F1", float(macro_f1(self.y, self.pred.astype(str)))


def with_unit(text: str, unit: str) -> str:
    """``population (people)``; ``text`` alone without a unit."""
    return f"{text} ({unit})" if unit else text


def task_predictions(
    run: RunDir,
    city: City,
    task: str,
    probe: str,
    split: str,
    seed: int,
) -> TaskPredictions:
    """Join ``task``'s labels to the run's embeddings and predict them out of fold."""
    name, level, kind, frame, _ = resolve_task(city, task, None, None, None)
    emb_frame, emb = _embeddings(run, level)
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
    unit = city.labels[name].unit
    back = _background(city, level, ids)
    return TaskPredictions(name, level, kind, unit, ids, y, pred, shapes, back)


def _background(city: City, level: str, ids: np.ndarray) -> gpd.GeoDataFrame | None:
    """The regions drawn grey beneath a task's items (all of them under POIs, the
    unlabelled ones beside labelled regions), in the metric CRS; None when none."""
    if not city.has("regions"):
        return None
    regions = city.regions
    if level == "region":
        regions = regions[~regions[REGION_ID].astype(str).isin(ids)]
    return regions.to_crs(city.crs) if len(regions) else None


def oof_protocol(split: str, probe: str) -> str:
    """How the out-of-fold predictions are made, in a few words."""
    blocks = "spatial-block" if split == "spatial" else "random"
    return f"out-of-fold predictions of {FOLDS} {blocks} folds, {probe} probe"


def _prediction_figures(tp: TaskPredictions, out: Path, probe: str, split: str) -> str:
    """PNG maps of true vs predicted values and a scatter (or confusion matrix); HTML."""
    from mfm.plots import confusion_plot, prediction_maps, prediction_scatter

    name, y, pred = tp.name, tp.y, tp.pred
    background = tp.background if tp.level == "poi" else None
    maps = prediction_maps(
        tp.shapes, y, pred, out / "predictions_map.png", kind=tp.kind, label=tp.label,
        background=background,
    )  # fmt: skip
    how = f"{oof_protocol(split, probe)}, n={len(y)}"
    metric, value = tp.score()
    over = f"{metric} {value:.3f} over the pooled {oof_protocol(split, probe)}"
    if tp.kind == "regression":
        side = prediction_scatter(
            y,
            pred,
            out / "predictions_scatter.png",
            title=f"{name}: out-of-fold R2 = {value:.3f} ({FOLDS} folds)",
            label=tp.label,
        )
        side_html = _img(side, f"{name} predicted vs true", over)
    else:
        side = confusion_plot(
            y,
            pred.astype(str),
            out / "predictions_confusion.png",
            title=f"{name}: out-of-fold macro F1 = {value:.3f} ({FOLDS} folds)",
        )
        side_html = _img(side, f"{name} confusion matrix", over)
    body = f'<div class="grid two">{_img(maps, f"{name} true and predicted", how)}{side_html}</div>'
    return _section(
        f"Task {name}: predicted vs true",
        body,
        f"{tp.level} {tp.kind}; predictions of the frozen embeddings by the evaluation probe, "
        "each item predicted by a probe that never saw it. "
        + ("Shared colour scale." if tp.kind == "regression" else "Shared class colours."),
    )


# --------------------------------------------------------------------------- interactive maps

MAP_MAX_ITEMS = 20_000
"""Items drawn per map at most (a seeded sample beyond: the page stays light)."""

MAP_CSS = """
.maps-intro p { margin: 0 0 6px; }
.map-pair { display: grid; gap: 18px; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
.map-pair figure { margin: 0; }
svg.map { display: block; width: 100%; height: auto; max-height: 440px;
  background: #fafbfc; border: 1px solid #eef0f3; border-radius: 4px; }
svg.map [data-i] { cursor: crosshair; }
svg.map [data-i]:hover, svg.map .hi { stroke: #111; stroke-width: 1.6px; }
svg.bar { display: block; width: 260px; height: 46px; margin-top: 4px;
  font: 11px sans-serif; fill: #57606a; }
.map-head { display: flex; align-items: baseline; gap: 10px; margin-bottom: 4px;
  font-size: 13px; font-weight: 600; }
.map-head button { font: 12px sans-serif; padding: 1px 8px; border: 1px solid #d0d7de;
  background: #f6f8fa; border-radius: 4px; cursor: pointer; }
.map-head button[aria-pressed="true"] { background: #1f3a5f; color: #fff; border-color: #1f3a5f; }
.swatches { display: flex; flex-wrap: wrap; gap: 2px 12px; margin-top: 6px; font-size: 12px; }
.swatches i { display: inline-block; width: 11px; height: 11px; margin-right: 4px;
  vertical-align: -1px; border-radius: 2px; }
.mfm-tip { position: fixed; z-index: 10; pointer-events: none; background: #1f2328;
  color: #fff; padding: 6px 9px; border-radius: 4px; font-size: 12px; line-height: 1.45;
  box-shadow: 0 2px 8px rgba(0,0,0,.25); }
.mfm-tip b { font-weight: 600; color: #c9d1d9; margin-right: 6px; }
"""

MAP_JS = """
(function () {
  var data = {};
  document.querySelectorAll("script.map-data").forEach(function (s) {
    data[s.dataset.task] = JSON.parse(s.textContent);
  });
  var tip = document.createElement("div");
  tip.className = "mfm-tip"; tip.hidden = true; document.body.appendChild(tip);
  function fmt(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v === "string") return v;
    var a = Math.abs(v);
    return (a >= 1e6 || (a > 0 && a < 1e-3)) ? v.toExponential(3) : String(+v.toPrecision(5));
  }
  function rows(d, i) {
    var u = d.unit ? " " + d.unit : "";
    var r = [["id", d.id[i]], ["true", fmt(d.true[i]) + u], ["predicted", fmt(d.pred[i]) + u]];
    if (d.kind === "regression") {
      r.push(["residual", (d.res[i] > 0 ? "+" : "") + fmt(d.res[i]) + u]);
    } else {
      r.push(["", d.true[i] === d.pred[i] ? "correct" : "wrong"]);
    }
    return r;
  }
  var lit = [];
  function light(task, i) {
    lit.forEach(function (e) { e.classList.remove("hi"); });
    lit = task === null ? [] : Array.prototype.slice.call(document.querySelectorAll(
      'svg.map[data-task="' + task + '"] [data-i="' + i + '"]'));
    lit.forEach(function (e) { e.classList.add("hi"); });
  }
  document.addEventListener("mouseover", function (ev) {
    var el = ev.target.closest ? ev.target.closest("[data-i]") : null;
    var map = el ? el.closest("svg.map") : null;
    if (!map || !data[map.dataset.task]) { tip.hidden = true; light(null); return; }
    var d = data[map.dataset.task], i = +el.dataset.i;
    tip.replaceChildren();
    rows(d, i).forEach(function (r) {
      var line = document.createElement("div"), k = document.createElement("b");
      k.textContent = r[0]; line.appendChild(k);
      line.appendChild(document.createTextNode(r[1])); tip.appendChild(line);
    });
    tip.hidden = false; light(map.dataset.task, i);
    place(ev);
  });
  function place(ev) {
    var x = ev.clientX + 14, y = ev.clientY + 14;
    tip.style.left = Math.max(4, Math.min(x, innerWidth - tip.offsetWidth - 8)) + "px";
    tip.style.top = Math.max(4, Math.min(y, innerHeight - tip.offsetHeight - 8)) + "px";
  }
  document.addEventListener("mousemove", function (ev) { if (!tip.hidden) place(ev); });
  document.querySelectorAll("button[data-show]").forEach(function (b) {
    b.addEventListener("click", function () {
      var task = b.dataset.task, fills = data[task].fills[b.dataset.show];
      document.querySelectorAll('svg.map[data-task="' + task + '"][data-layer="value"] [data-i]')
        .forEach(function (e) { e.setAttribute("fill", fills[+e.dataset.i]); });
      document.querySelectorAll('button[data-task="' + task + '"]').forEach(function (o) {
        o.setAttribute("aria-pressed", String(o === b));
      });
    });
  });
  document.documentElement.dataset.maps = "ready";
})();
"""


def slug(name: str) -> str:
    """``name`` safe for an HTML id and a CSS attribute selector."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name) or "task"


def _sample(n: int, seed: int) -> np.ndarray:
    """Rows drawn on the maps: all, or a sorted seeded sample of :data:`MAP_MAX_ITEMS`."""
    if n <= MAP_MAX_ITEMS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAP_MAX_ITEMS, replace=False))


def _short(values: np.ndarray) -> list[Any]:
    """JSON-ready values: floats to 6 significant digits (NaN: null), labels as strings."""
    if values.dtype.kind == "f":
        return [float(f"{v:.6g}") if np.isfinite(v) else None for v in values.tolist()]
    return [str(v) for v in values.tolist()]


def _value_layers(tp: TaskPredictions, rows: np.ndarray) -> tuple[dict[str, list[str]], str]:
    """Fills of the value map (``pred`` and ``true``) and its legend HTML."""
    from mfm.plots import class_colours, html_swatches, ramp_colours, svg_colourbar

    y, pred = tp.y[rows], tp.pred[rows]
    if tp.kind == "regression":
        both = np.concatenate([y, pred.astype(np.float64)])
        vmin, vmax = (float(v) for v in np.nanpercentile(both, [1, 99]))
        if vmax <= vmin:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        fills = {
            k: ramp_colours(v, "viridis", vmin, vmax) for k, v in (("pred", pred), ("true", y))
        }
        legend = svg_colourbar("viridis", vmin, vmax, f"{tp.label}, 1st-99th percentile")
        return fills, legend
    classes = sorted(set(map(str, tp.y)) | set(map(str, tp.pred)))
    colour = class_colours(classes)
    fills = {k: [colour[str(c)] for c in v] for k, v in (("pred", pred), ("true", y))}
    return fills, html_swatches([(colour[c], c) for c in classes[:20]])


def _residual_layer(tp: TaskPredictions, rows: np.ndarray) -> tuple[list[str], str, list[Any]]:
    """Fills of the residual map, its legend HTML and the residuals for the tooltips."""
    from mfm.plots import html_swatches, ramp_colours, svg_colourbar

    y, pred = tp.y[rows], tp.pred[rows]
    if tp.kind == "regression":
        res = pred.astype(np.float64) - y
        lim = float(np.nanpercentile(np.abs(res), 99)) if len(res) else 1.0
        lim = lim if lim > 0 else 1.0
        fills = ramp_colours(res, "RdBu_r", -lim, lim)
        label = with_unit("residual = predicted - true", tp.unit)
        return fills, svg_colourbar("RdBu_r", -lim, lim, label, mid=True), _short(res)
    right = pred.astype(str) == y.astype(str)
    ok, bad = "#8fbc8f", "#cf222e"
    legend = html_swatches([(ok, f"correct ({right.sum()})"), (bad, f"wrong ({(~right).sum()})")])
    return [ok if r else bad for r in right], legend, [None] * len(rows)


def _map_frame(tp: TaskPredictions, shapes: gpd.GeoSeries) -> MapFrame:
    """The page projection showing the drawn items and the background regions."""
    from mfm.plots import MapFrame

    bounds = np.asarray(shapes.total_bounds, dtype=np.float64)
    if tp.background is not None:
        back = np.asarray(tp.background.total_bounds, dtype=np.float64)
        bounds = np.r_[np.minimum(bounds[:2], back[:2]), np.maximum(bounds[2:], back[2:])]
    return MapFrame.fit(bounds)


def _map_data(tp: TaskPredictions, rows: np.ndarray, key: str, extra: dict[str, Any]) -> str:
    """The tooltip data of a task's maps (ids, true, predicted values and ``extra``) as an
    inline ``<script type="application/json">``."""
    data = {
        "kind": tp.kind,
        "unit": tp.unit,
        "id": [str(i) for i in tp.ids[rows]],
        "true": _short(tp.y[rows]),
        "pred": _short(tp.pred[rows]),
        **extra,
    }
    blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")  # no </script>
    return f'<script type="application/json" class="map-data" data-task="{key}">{blob}</script>'


def _task_map(tp: TaskPredictions, split: str, probe: str, seed: int) -> str:
    """One task's interactive maps (value, with a predicted/true toggle, and residual),
    their tooltip data and legends, as a ``<section id="map-<task>">``."""
    from mfm.plots import svg_map, svg_shapes

    rows = _sample(len(tp.y), seed)
    shapes = tp.shapes.geometry.iloc[rows]
    frame = _map_frame(tp, shapes)
    items = svg_shapes(shapes, frame)
    back = svg_shapes(tp.background.geometry, frame) if tp.background is not None else []
    fills, value_legend = _value_layers(tp, rows)
    res_fills, res_legend, res = _residual_layer(tp, rows)
    key = slug(tp.name)
    script = _map_data(tp, rows, key, {"res": res, "fills": fills})
    value_svg, res_svg = (
        svg_map(
            items, f, frame, background=back, label=f"{tp.name} {layer}",
            attrs={"data-task": key, "data-layer": layer},
        )
        for f, layer in ((fills["pred"], "value"), (res_fills, "residual"))
    )  # fmt: skip
    buttons = "".join(
        f'<button type="button" data-task="{key}" data-show="{k}" '
        f'aria-pressed="{str(k == "pred").lower()}">{text}</button>'
        for k, text in (("pred", "predicted"), ("true", "true"))
    )
    res_title = "residual" if tp.kind == "regression" else "correct / wrong"
    left = (
        f'<figure><div class="map-head">{html.escape(tp.label)} {buttons}</div>'
        f"{value_svg}{value_legend}</figure>"
    )
    right = (
        f'<figure><div class="map-head">{html.escape(res_title)}</div>{res_svg}{res_legend}'
        "</figure>"
    )
    metric, value = tp.score()
    shown = (
        f"{len(rows):,} of {len(tp.y):,} (seeded sample)"
        if len(rows) < len(tp.y)
        else f"{len(tp.y):,}"
    )
    note = (
        f"{tp.level} {tp.kind}, {shown} items; {oof_protocol(split, probe)}; out-of-fold "
        f"{metric} {value:.3f} (pooled). Hover an item for its id, true and predicted value"
        + (" and residual." if tp.kind == "regression" else ".")
    )
    return (
        f'<section id="map-{key}"><h2>Map: {html.escape(tp.name)}</h2><p class="note">'
        f'{html.escape(note)}</p><div class="map-pair">{left}{right}</div>{script}</section>'
    )


def _protocol_html(split: str, probe: str, results: list[Any]) -> str:
    """The report's two protocols, stated once."""
    done = [r for r in results if "error" not in r]
    runs = sorted({f"{r['runs']} {r['split']}" for r in done})
    size = sorted({float(r.get("test_size", 0.2)) for r in done})
    splits = " / ".join(runs) if runs else "the"
    held = f", {size[0]:.0%} held out each" if len(size) == 1 else ""
    return (
        '<section class="maps-intro"><h2>How to read the numbers</h2>'
        "<p><b>Maps, tooltips and the scatter plot</b>: "
        f"{html.escape(oof_protocol(split, probe))}: "
        f"every item is predicted by a probe fitted on the other {FOLDS - 1} folds; their "
        "R2 (or macro F1) is one number over all pooled predictions, called "
        "<i>out-of-fold</i> wherever it appears.</p>"
        f"<p><b>Evaluation tables</b>: mean (std) over {html.escape(splits)} train/test splits"
        f"{held} (<code>mfm eval</code>), a different protocol: its R2 is close to, but not "
        "the same number as, the out-of-fold R2.</p></section>"
    )


# --------------------------------------------------------------------------- eval tables


def _eval_results(
    run_dir: Path, runs: int, probe: str, split: str, seed: int, city: Path | str | None = None
) -> list[Any]:
    """``RUN_DIR/eval/*.json``, or evaluate every task of the city first and write them."""
    order = list(RunDir(run_dir).city(city).labels)  # the city's order, extras last
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


def _with_units(result: dict[str, Any], rows: list[list[str]], unit: str) -> list[list[str]]:
    """Rows of :func:`table_rows` with the unit after RMSE and MAE (R2, F1: no unit)."""
    if not unit or result.get("kind") != "regression":
        return rows
    return [[with_unit(r[0], unit) if r[0] in ("RMSE", "MAE") else r[0], *r[1:]] for r in rows]


def _eval_html(results: list[Any], units: dict[str, str]) -> str:
    """The evaluation tables (mean (std) over the evaluation's splits), one per task."""
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
        rows = _with_units(r, rows, units.get(r["task"], ""))
        head = f"{title(r)}; cells: mean (std) over {r['runs']} {r['split']} splits"
        parts.append(f"<div><h3>{html.escape(head)}</h3>{_table(header, rows, best)}</div>")
    return _section(
        "Evaluation",
        f'<div class="tables">{"".join(parts)}</div>',
        "Frozen embeddings (mfm) and baselines probed on the same train/test splits; cells "
        "are mean (std) over the splits (not the out-of-fold numbers of the maps), best mean "
        "per row in green.",
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


def _header(manifest: RunManifest, city: City) -> str:
    cfg = manifest.config
    stages = manifest.stages
    mods = ", ".join(manifest.modalities) or "-"
    stage_text = ", ".join(f"{s['name']} ({s['scale']})" for s in stages) or "none"
    wall = manifest.wall_seconds
    device = manifest.device
    items = [
        ("city", f"{city.name} ({manifest.city.crs})"),
        ("modalities", mods),
        ("stages", stage_text),
        ("wall time", f"{wall:.1f} s" if isinstance(wall, int | float) else "-"),
        ("epochs", str(cfg.get("epochs", "-"))),
        ("dim", str(cfg.get("dim", "-"))),
        ("device", f"{device.get('type', '?')} x{device.get('world_size', 1)}"),
        ("created", manifest.created),
    ]
    meta = "".join(f"<span><b>{k}</b> {html.escape(v)}</span>" for k, v in items)
    return (
        f'<header><div class="inner"><h1>UrbanMFM run: {html.escape(city.name)}</h1>'
        f'<div class="meta">{meta}</div></div></header>'
    )


def _stages_table(manifest: RunManifest) -> str:
    rows = []
    for s in manifest.stages:
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
    skipped = [p for p in manifest.plan if p.get("skipped")]
    extra = ""
    if skipped:
        extra = "<h3>Skipped objectives</h3>" + _table(
            ["objective", "scale", "reason"],
            [[p["objective"], p["scale"], p["skipped"]] for p in skipped],
            left={1},
            text_cols={2},
        )
    return _table(header, rows, left={1}) + extra


def _health_table(manifest: RunManifest) -> str:
    """Rows: after each stage; columns: every objective's loss (its chance level); a cell
    at or above :data:`NEAR_CHANCE` of chance is marked."""
    from mfm.core.trainer import NEAR_CHANCE

    stages = manifest.stages
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


def _embedding_html(run: RunDir, city: City, out: Path) -> str:
    """The PCA map of the region (else POI) embeddings beside the training losses."""
    from mfm.plots import loss_curves, pca_map

    pois = city.pois.to_crs(city.crs)
    if run.manifest.outputs.region_embeddings:
        frame, emb = _embeddings(run, "region")
        shapes: gpd.GeoDataFrame = frame.to_crs(city.crs)
        what = f"{len(frame)} regions"
        if REGION_ID in frame and city.has("regions"):  # the city's own polygons, same order
            shapes = city.regions.set_index(REGION_ID).loc[frame[REGION_ID]].reset_index()
            shapes = shapes.to_crs(city.crs)
        pca = pca_map(shapes, emb, out / "embedding_pca.png", pois=pois)
    else:
        frame, emb = _embeddings(run, "poi")
        what = f"{len(frame)} POIs (the run has no region embeddings)"
        pca = pca_map(frame.to_crs(city.crs), emb, out / "embedding_pca.png", title="POI PCA")
    pca_html = _section(
        "Embedding map",
        _img(pca, "PCA of the embeddings"),
        f"{what} coloured by the first three principal components of their embeddings "
        "(PC1 = red, PC2 = green, PC3 = blue, each min-max scaled): similar colours, similar "
        "embeddings. POIs drawn faintly on top.",
    )
    curves = loss_curves(run.manifest.stages, out / "loss_curves.png")
    train_html = _section(
        "Training",
        _img(curves, "training loss per stage") + _stages_table(run.manifest),
        "Loss per optimizer step of each stage (the paper's Fig. 4); stages run in order.",
    )
    return f'<div class="grid half cards">{pca_html}{train_html}</div>'


def _health_html(manifest: RunManifest, out: Path) -> str:
    """The objective-health figure and table."""
    from mfm.plots import health_curves

    health = health_curves(manifest.stages, out / "health.png")
    health_img = _img(health, "objective health") if health is not None else ""
    return _section(
        "Objective health",
        health_img + _health_table(manifest),
        "Every objective's InfoNCE loss on a fixed batch of its items after every stage, "
        "with its chance level (log of the candidates per anchor) in brackets; red: at or "
        "above 95% of chance, i.e. the objective is (back) at chance.",
    )


def _error_section(heading: str, exc: Exception) -> str:
    return _section(heading, f'<p class="error">{html.escape(str(exc))}</p>')


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

    The page opens with one interactive map pair per labelled task (``#map-<task>``),
    then the embedding map, training, objective health, ``task``'s figures and the
    evaluation (and ablation) tables.

    Args:
        run_dir: A directory written by ``mfm run``.
        task: Task whose predictions get the PNG figures (default: the city's first
            regression task); every task gets an interactive map.
        ablation: An ``mfm ablate`` output directory (or one of its files) to embed
            (default: ``RUN_DIR/../ablation.md``'s directory, when it exists).
        runs: Repetitions when the evaluation has to be run first (no ``eval/*.json``).
        probe: Probe of the out-of-fold predictions (and of a fresh evaluation).
        split: ``random`` or ``spatial`` folds / splits.
        seed: Seed of the folds and of a fresh evaluation.
        city: The run's city bundle, when it moved (default: the manifest's ``city.root``).

    Returns:
        The path of ``index.html``.

    Raises:
        MfmError: Not a run directory, an unknown task, a missing ablation directory.
    """
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    manifest = run.manifest
    city_root = city
    city = run.city(city_root)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    where = _ablation_dir(run_dir, ablation)
    task = task or _default_task(city)
    if task is not None and task not in city.labels:
        have = ", ".join(city.labels) or "none"
        raise MfmError(f"unknown task {task!r}; tasks of city {city.name!r}: {have}")

    results = _eval_results(run_dir, runs, probe, split, seed, city_root)
    maps: list[str] = []
    figures = ""
    for name in city.labels:
        try:
            tp = task_predictions(run, city, name, probe, split, seed)
        except MfmError as exc:
            maps.append(_error_section(f"Map: {name}", exc))
            figures = _error_section(f"Task {name}", exc) if name == task else figures
            continue
        maps.append(_task_map(tp, split, probe, seed))
        if name == task:
            figures = _prediction_figures(tp, out, probe, split)

    sections = [_protocol_html(split, probe, results), *maps] if maps else []
    sections += [_embedding_html(run, city, out), _health_html(manifest, out)]
    sections.append(figures)
    units = {name: spec.unit for name, spec in city.labels.items()}
    sections.append(_eval_html(results, units))
    if where is not None:
        sections.append(_ablation_html(where))

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>UrbanMFM report: {html.escape(city.name)}</title>"
        f"<style>{CSS}{MAP_CSS}</style></head><body>{_header(manifest, city)}"
        f"<main>{''.join(sections)}</main>"
        + (f"<script>{MAP_JS}</script>" if maps else "")
        + "</body></html>\n"
    )
    return write_text(out / "index.html", page)
