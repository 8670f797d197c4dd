"""Figures for ``mfm report``, ``mfm ablate`` and ``mfm city info``, written as PNGs
atomically. A leaf module: it imports only ``mfm.core``, so ``cities`` and ``eval`` both
use it without importing each other.

Figures are plain ``matplotlib.figure.Figure`` objects rendered by the Agg canvas, never
pyplot: no global backend switch, no display needed, and a notebook's own backend is left
alone. Every function takes arrays / frames, draws one figure and writes it with
:func:`save_figure`.

The interactive maps of the report are inline SVG strings instead (:func:`svg_map`,
:func:`svg_colourbar`): geometries projected from the bundle's metric CRS to the page,
simplified to half a pixel, no basemap, nothing fetched.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from mfm.core.errors import MfmError

try:
    import matplotlib as mpl
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
except ImportError:  # the report extra is not installed
    raise MfmError(
        "figures need matplotlib, which this install lacks; pip install 'urban-mfm[report]'"
    ) from None

from mfm.core.atomic import atomic_path

DPI = 110
STYLE: dict[str, Any] = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
}
R2_FLOOR = -1.0
"""Lowest score the ablation chart shows (a random baseline's R2 can be far below)."""


def save_figure(fig: Figure, path: Path | str) -> Path:
    """Save ``fig`` as PNG atomically (temporary name, then rename) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


def pca_rgb(emb: np.ndarray) -> np.ndarray:
    """First three principal components of ``emb [N, d]`` as RGB colours in ``[0, 1]``.

    Each component is min-max scaled on its own; missing components (``N < 3`` or
    ``d < 3``) and constant ones are mid-grey.
    """
    x = np.asarray(emb, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    rgb = np.full((len(x), 3), 0.5)
    if len(x) < 2:
        return rgb
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    pcs = u[:, :3] * s[:3]
    for c in range(pcs.shape[1]):
        lo, hi = pcs[:, c].min(), pcs[:, c].max()
        if hi - lo > 1e-12:
            rgb[:, c] = (pcs[:, c] - lo) / (hi - lo)
    return rgb


def _cmap(name: str) -> Colormap:
    return mpl.colormaps[name]


def _subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs: Any
) -> tuple[Figure, Any]:
    """A pyplot-free ``subplots``."""
    fig = Figure(figsize=figsize, **kwargs)
    return fig, fig.subplots(nrows, ncols)


def _map_axes(ax: Any, title: str) -> None:
    ax.set_title(title)
    ax.set_axis_off()
    ax.set_aspect("equal")


def pca_map(
    regions: gpd.GeoDataFrame,
    emb: np.ndarray,
    path: Path | str,
    pois: gpd.GeoDataFrame | None = None,
    title: str = "region embeddings, PC1-3 as RGB",
) -> Path:
    """Regions coloured by :func:`pca_rgb` of their embeddings, POIs faint on top.

    Args:
        regions: Region polygons in a metric CRS, one row per ``emb`` row.
        emb: Region embeddings ``[R, d]``.
        path: Output PNG.
        pois: POI points in the same CRS (optional).
        title: Figure title.
    """
    with mpl.rc_context(STYLE):
        fig, ax = _subplots(figsize=(6.4, 6.4))
        regions.plot(ax=ax, color=pca_rgb(emb), edgecolor="white", linewidth=0.4)
        if pois is not None and len(pois):
            pois.plot(ax=ax, color="black", markersize=1.5, alpha=0.25, linewidth=0)
        _map_axes(ax, title)
        return save_figure(fig, path)


def city_map(
    regions: gpd.GeoDataFrame | None,
    path: Path | str,
    *,
    roads: gpd.GeoDataFrame | None = None,
    pois: gpd.GeoDataFrame | None = None,
    values: np.ndarray | None = None,
    value_name: str = "",
    title: str = "",
) -> Path:
    """A bundle at a glance: regions (by ``values`` when given), roads and POIs.

    All frames in one metric CRS; ``values`` has one entry per region (NaN: unlabelled).
    """
    with mpl.rc_context(STYLE):
        fig, ax = _subplots(figsize=(7.2, 7.2))
        if regions is not None and len(regions):
            if values is None:
                colors = mpl.colormaps["Pastel1"](np.arange(len(regions)) % 9)
                regions.plot(ax=ax, color=colors, edgecolor="white", linewidth=0.6)
            else:
                norm = Normalize(np.nanmin(values), np.nanmax(values))
                cmap = _cmap("viridis")
                shown = np.isfinite(values)
                regions[~shown].plot(ax=ax, color="#eeeeee", edgecolor="white", linewidth=0.6)
                regions[shown].plot(
                    ax=ax, color=cmap(norm(values[shown])), edgecolor="white", linewidth=0.6
                )
                bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, shrink=0.6)
                bar.set_label(value_name)
        if roads is not None and len(roads):
            roads.plot(ax=ax, color="#555555", linewidth=0.35, alpha=0.8)
        if pois is not None and len(pois):
            pois.plot(ax=ax, color="#d62728", markersize=1.2, alpha=0.6, linewidth=0)
        _map_axes(ax, title)
        return save_figure(fig, path)


def prediction_maps(
    frame: gpd.GeoDataFrame,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    path: Path | str,
    *,
    kind: str = "regression",
    label: str = "value",
    background: gpd.GeoDataFrame | None = None,
) -> Path:
    """True and predicted values side by side on one colour scale.

    Args:
        frame: The labelled items (region polygons or POI points) in a metric CRS.
        y_true: True values (regression) or labels (classification), one per row.
        y_pred: Out-of-fold predictions, one per row.
        path: Output PNG.
        kind: ``regression`` (shared continuous scale) or ``classification`` (shared
            categorical colours).
        label: Name of the target, for the colour bar.
        background: Shapes drawn in light grey beneath (e.g. the regions under POIs).
    """
    points = bool(len(frame)) and frame.geom_type.isin(["Point", "MultiPoint"]).all()
    size = float(np.clip(8000 / max(len(frame), 1), 3, 24))  # fewer points, bigger dots
    style: dict[str, Any] = {"markersize": size} if points else {"edgecolor": "white"}
    style["linewidth"] = 0.3
    with mpl.rc_context(STYLE):
        fig, axes = _subplots(1, 2, figsize=(10, 4.8), constrained_layout=True)
        if kind == "regression":
            yt, yp = np.asarray(y_true, float), np.asarray(y_pred, float)
            both = np.concatenate([yt, yp])
            vmin, vmax = np.nanpercentile(both, [1, 99]) if len(both) else (0.0, 1.0)
            if vmax <= vmin:
                vmin, vmax = vmin - 0.5, vmax + 0.5
            norm = Normalize(vmin=vmin, vmax=vmax)
            cmap = _cmap("viridis")
            for ax, values, name in zip(axes, (yt, yp), ("true", "predicted"), strict=True):
                if background is not None:
                    background.plot(ax=ax, color="#eeeeee", edgecolor="white", linewidth=0.3)
                frame.plot(ax=ax, color=cmap(norm(values)), **style)
                _map_axes(ax, f"{name} {label}")
            sm = ScalarMappable(norm=norm, cmap=cmap)
            fig.colorbar(sm, ax=axes, shrink=0.7, label=label)
        else:
            classes = sorted(set(map(str, y_true)) | set(map(str, y_pred)))
            cmap = _cmap("tab20" if len(classes) > 10 else "tab10")
            colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
            for ax, values, name in zip(axes, (y_true, y_pred), ("true", "predicted"), strict=True):
                if background is not None:
                    background.plot(ax=ax, color="#eeeeee", edgecolor="white", linewidth=0.3)
                frame.plot(ax=ax, color=[colour[str(v)] for v in values], **style)
                _map_axes(ax, f"{name} {label}")
            handles = [Patch(color=colour[c], label=c) for c in classes[:20]]
            fig.legend(handles=handles, loc="outside right center", frameon=False)
        return save_figure(fig, path)


def prediction_scatter(
    y_true: np.ndarray, y_pred: np.ndarray, path: Path | str, *, title: str, label: str = "value"
) -> Path:
    """Predicted against true values with the identity line."""
    yt, yp = np.asarray(y_true, float), np.asarray(y_pred, float)
    with mpl.rc_context(STYLE):
        fig, ax = _subplots(figsize=(5, 5))
        ax.scatter(yt, yp, s=14, alpha=0.7, color="#3b6ea8", edgecolor="none")
        lo = float(np.nanmin(np.concatenate([yt, yp]))) if len(yt) else 0.0
        hi = float(np.nanmax(np.concatenate([yt, yp]))) if len(yt) else 1.0
        ax.plot([lo, hi], [lo, hi], color="#888888", linewidth=1, linestyle="--")
        ax.set_xlabel(f"true {label}")
        ax.set_ylabel(f"predicted {label} (out of fold)")
        ax.set_title(title)
        return save_figure(fig, path)


def confusion_plot(y_true: np.ndarray, y_pred: np.ndarray, path: Path | str, *, title: str) -> Path:
    """Row-normalized confusion matrix of out-of-fold class predictions."""
    classes = sorted(set(map(str, y_true)) | set(map(str, y_pred)))
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)))
    for t, p in zip(map(str, y_true), map(str, y_pred), strict=True):
        m[index[t], index[p]] += 1
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = min(2.6 + 0.3 * len(classes), 9)
    with mpl.rc_context(STYLE):
        fig, ax = _subplots(figsize=(size + 1, size))
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
        return save_figure(fig, path)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    n = np.arange(1, len(y) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def loss_curves(stages: Sequence[Mapping[str, Any]], path: Path | str) -> Path:
    """Training loss per step of every stage (the paper's Fig. 4).

    Args:
        stages: The manifest's ``stages`` records (``name``, ``scale``, ``losses``).
        path: Output PNG.
    """
    with mpl.rc_context(STYLE):
        fig, ax = _subplots(figsize=(7, 4.6))
        colours = _cmap("tab10")
        for i, stage in enumerate(stages):
            y = np.asarray(stage.get("losses") or [], dtype=float)
            if not len(y):
                continue
            x = np.arange(1, len(y) + 1)
            label = f"{stage.get('name', '?')} ({stage.get('scale', '?')})"
            colour = colours(i % 10)
            if len(y) > 50:
                ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
                ax.plot(x, _smooth(y, max(len(y) // 25, 2)), color=colour, label=label)
            else:
                ax.plot(x, y, color=colour, marker="o", markersize=3, label=label)
        ax.set_xlabel("step within the stage")
        ax.set_ylabel("training loss (InfoNCE)")
        ax.set_title("training loss per stage")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
        return save_figure(fig, path)


def health_curves(stages: Sequence[Mapping[str, Any]], path: Path | str) -> Path | None:
    """Each objective's fixed-batch loss over its chance level after every stage (1 =
    chance), or None when the manifest records no health."""
    names = list(dict.fromkeys(n for s in stages for n in s.get("health", {})))
    if not names:
        return None
    with mpl.rc_context(STYLE):
        fig, ax = _subplots(figsize=(7, 4.6))
        colours = _cmap("tab10")
        x = np.arange(1, len(stages) + 1)
        for i, name in enumerate(names):
            y = [
                h["loss"] / h["chance"] if (h := s.get("health", {}).get(name)) else np.nan
                for s in stages
            ]
            ax.plot(x, y, color=colours(i % 10), marker="o", markersize=4, label=name)
        ax.axhline(1.0, color="#57606a", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, [f"after {s.get('name', '?')}" for s in stages], rotation=20)
        ax.set_ylabel("loss / chance level")
        ax.set_title("objective health: every objective's loss after every stage")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)
        return save_figure(fig, path)


def ablation_bars(
    tasks: Sequence[tuple[str, str]],
    bars: Sequence[tuple[str, Sequence[list[float | None] | None], bool]],
    path: Path | str,
    *,
    title: str = "ablation",
) -> Path:
    """Grouped bar chart: tasks on the x axis, one bar per variant, error bars = std.

    Args:
        tasks: ``(task name, metric label)`` per group.
        bars: ``(variant name, [mean, std] per task (None where missing), is_baseline)``;
            baselines are drawn hatched in grey tones.
        path: Output PNG.
        title: Figure title.
    """
    n_groups, n_bars = len(tasks), max(len(bars), 1)
    width = 0.8 / n_bars
    with mpl.rc_context(STYLE):
        fig, ax = _subplots(figsize=(max(6.0, 1.0 + n_groups * (0.5 + 0.32 * n_bars)), 4.8))
        colours = _cmap("tab10")
        greys = ["#9a9a9a", "#c4c4c4", "#6f6f6f", "#dadada"]
        lowest = 0.0
        n_var = 0
        for j, (name, pairs, baseline) in enumerate(bars):
            means = np.array([p[0] if p and p[0] is not None else np.nan for p in pairs])
            stds = np.array([p[1] if p and p[1] is not None else 0.0 for p in pairs])
            shown = np.maximum(means, R2_FLOOR)
            stds = np.where(means < R2_FLOOR, 0.0, stds)  # a clipped bar gets its value instead
            x = np.arange(n_groups) - 0.4 + width * (j + 0.5)
            if baseline:
                style = {"color": greys[(j - n_var) % len(greys)], "hatch": "//"}
            else:
                style = {"color": colours(n_var % 10)}
                n_var += 1
            label = f"{name} (baseline)" if baseline else name
            ax.bar(x, shown, width, yerr=stds, capsize=2, label=label, edgecolor="white", **style)
            for xi, m in zip(x, means, strict=True):
                if m < R2_FLOOR:  # clipped: print the real mean at the bar's foot
                    ax.annotate(
                        f"{m:.2f}",
                        (xi, R2_FLOOR),
                        xytext=(0, 3),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        color="#111111",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
                        fontsize=7,
                        rotation=90,
                    )
            if np.isfinite(shown).any():
                lowest = min(lowest, float(np.nanmin(shown - stds)))
        ax.axhline(0, color="#444444", linewidth=0.8)
        ax.set_xticks(range(n_groups), [f"{t}\n({m})" for t, m in tasks])
        ax.set_ylabel("score (higher is better)")
        ax.set_ylim(bottom=min(max(lowest - 0.05, R2_FLOOR - 0.1), 0.0))
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return save_figure(fig, path)


# --------------------------------------------------------------------------- SVG maps

MAP_WIDTH = 520.0
"""Width of an SVG map in viewBox units (it scales to its column)."""
MAP_MAX_HEIGHT = 600.0
MAP_PAD = 6.0


@dataclass(frozen=True)
class MapFrame:
    """Projection of a metric CRS onto an SVG viewBox (x right, y down)."""

    minx: float
    maxy: float
    scale: float  # viewBox units per metre
    width: float
    height: float

    @classmethod
    def fit(cls, bounds: Sequence[float]) -> MapFrame:
        """The frame showing ``bounds`` (minx, miny, maxx, maxy) at most
        :data:`MAP_WIDTH` x :data:`MAP_MAX_HEIGHT`, aspect kept."""
        minx, miny, maxx, maxy = (float(b) for b in bounds)
        dx, dy = max(maxx - minx, 1e-9), max(maxy - miny, 1e-9)
        scale = min((MAP_WIDTH - 2 * MAP_PAD) / dx, (MAP_MAX_HEIGHT - 2 * MAP_PAD) / dy)
        return cls(minx, maxy, scale, dx * scale + 2 * MAP_PAD, dy * scale + 2 * MAP_PAD)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Map coordinates ``[N, 2]`` to viewBox coordinates, rounded to 0.1."""
        x = MAP_PAD + (xy[:, 0] - self.minx) * self.scale
        y = MAP_PAD + (self.maxy - xy[:, 1]) * self.scale
        return np.round(np.column_stack([x, y]), 1)


def _polygon_paths(geoms: np.ndarray, frame: MapFrame) -> list[str]:
    """SVG path data (``M x y L ... Z`` per ring) of every (multi)polygon; "" if empty."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    coords, coord_of = shapely.get_coordinates(rings, return_index=True)
    pix = frame.apply(coords) if len(coords) else np.zeros((0, 2))
    bounds = np.searchsorted(coord_of, np.arange(len(rings) + 1))
    paths = [""] * len(geoms)
    for r, owner in enumerate(part_of[ring_of]):
        pts = pix[bounds[r] : bounds[r + 1] - 1].tolist()  # the closing point is implied
        if len(pts) >= 3:
            rest = " ".join(f"{x:g} {y:g}" for x, y in pts[1:])
            paths[owner] += f"M{pts[0][0]:g} {pts[0][1]:g}L{rest}Z"
    return paths


def svg_shapes(geoms: gpd.GeoSeries, frame: MapFrame) -> list[str]:
    """One SVG element (without fill) per geometry: a ``<path`` for polygons, a
    ``<circle`` (sized by the number of points) for anything else; "" when empty.

    Polygons are simplified to half a viewBox unit first.
    """
    values = np.asarray(geoms.values, dtype=object)
    poly = np.isin(shapely.get_type_id(values), [3, 6])  # Polygon, MultiPolygon
    out = [""] * len(values)
    if poly.any():
        simple = shapely.simplify(values[poly], 0.5 / frame.scale, preserve_topology=True)
        for i, d in zip(np.flatnonzero(poly), _polygon_paths(simple, frame), strict=True):
            out[i] = f'<path d="{d}"' if d else ""
    rest = np.flatnonzero(~poly & ~shapely.is_empty(values) & ~shapely.is_missing(values))
    if len(rest):
        radius = float(np.clip(260 / np.sqrt(len(rest)), 1.6, 7.0))
        xy = frame.apply(shapely.get_coordinates(shapely.point_on_surface(values[rest])))
        for i, (x, y) in zip(rest, xy.tolist(), strict=True):
            out[i] = f'<circle cx="{x:g}" cy="{y:g}" r="{radius:g}"'
    return out


def hex_colours(rgba: np.ndarray) -> list[str]:
    """``#rrggbb`` of colours ``[N, 3+]`` in ``[0, 1]``."""
    rgb = np.clip(np.round(np.asarray(rgba)[:, :3] * 255), 0, 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb.tolist()]


def ramp_colours(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> list[str]:
    """Hex colours of ``values`` on colormap ``cmap`` over ``[vmin, vmax]`` (clipped)."""
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)
    return hex_colours(_cmap(cmap)(norm(np.asarray(values, dtype=np.float64))))


def class_colours(classes: Sequence[str]) -> dict[str, str]:
    """The categorical colour of every class, as :func:`prediction_maps` draws them."""
    cmap = _cmap("tab20" if len(classes) > 10 else "tab10")
    return dict(zip(classes, hex_colours(cmap(np.arange(len(classes)) % cmap.N)), strict=True))


def svg_map(
    shapes: Sequence[str],
    fills: Sequence[str],
    frame: MapFrame,
    *,
    background: Sequence[str] = (),
    label: str = "",
    attrs: Mapping[str, str] | None = None,
) -> str:
    """An inline ``<svg class="map">`` (extra ``attrs`` on it): ``background`` shapes in
    light grey, then ``shapes`` (from :func:`svg_shapes`) filled with ``fills``, each
    tagged ``data-i`` with its row."""
    items = [
        f'{s} fill="{f}" data-i="{i}"/>'
        for i, (s, f) in enumerate(zip(shapes, fills, strict=True))
        if s
    ]
    back = "".join(f"{s}/>" for s in background if s)
    extra = "".join(f' {k}="{html.escape(v)}"' for k, v in (attrs or {}).items())
    return (
        f'<svg class="map"{extra} viewBox="0 0 {frame.width:.0f} {frame.height:.0f}" '
        f'role="img" aria-label="{html.escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        f'<g fill="#e6e9ed" stroke="#ffffff" stroke-width="0.5">{back}</g>'
        f'<g stroke="#ffffff" stroke-width="0.4" fill-rule="evenodd">{"".join(items)}</g></svg>'
    )


def _tick(v: float) -> str:
    """A legend number: ``25,831``, ``470``, ``12.35``, ``0.0123``."""
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}" if abs(v) >= 1 else f"{v:.3g}"


def svg_colourbar(cmap: str, vmin: float, vmax: float, label: str, *, mid: bool = False) -> str:
    """A horizontal colour bar of ``cmap`` from ``vmin`` to ``vmax`` (and the middle value
    when ``mid``), titled ``label``, as a small inline ``<svg>``."""
    stops = np.linspace(0, 1, 11)
    colours = hex_colours(_cmap(cmap)(stops))
    gid = "bar-" + hashlib.sha1(f"{cmap} {vmin} {vmax} {label}".encode()).hexdigest()[:10]
    grad = "".join(
        f'<stop offset="{o:.1f}" stop-color="{c}"/>' for o, c in zip(stops, colours, strict=True)
    )
    ticks = [(10, "start", vmin), (250, "end", vmax)] + (
        [(130, "middle", (vmin + vmax) / 2)] if mid else []
    )
    text = "".join(
        f'<text x="{x}" y="40" text-anchor="{a}">{html.escape(_tick(v))}</text>'
        for x, a, v in ticks
    )
    return (
        '<svg class="bar" viewBox="0 0 260 46" xmlns="http://www.w3.org/2000/svg">'
        f'<defs><linearGradient id="{gid}">{grad}</linearGradient></defs>'
        f'<text x="10" y="11">{html.escape(label)}</text>'
        f'<rect x="10" y="16" width="240" height="12" fill="url(#{gid})" stroke="#d0d7de"/>'
        f"{text}</svg>"
    )


def html_swatches(items: Sequence[tuple[str, str]]) -> str:
    """A legend of ``(colour, label)`` swatches (categorical maps)."""
    spans = "".join(
        f'<span><i style="background:{c}"></i>{html.escape(t)}</span>' for c, t in items
    )
    return f'<div class="swatches">{spans}</div>'
