"""A summary of a City bundle: layers, sizes, extent and labels (``mfm city info``).

:func:`city_info` loads (and so validates) the bundle and returns a JSON-serialisable dict;
:func:`info_table` renders that dict with rich. Everything is computed column-wise, so a
bundle with 100k POIs summarises in about the time it takes to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mfm.cities.bundle import read_manifest
from mfm.core.bundle.city import City
from mfm.core.constants import FOOTPRINT, LAYERS, LEVEL_LAYER, REGION_ID, SVI_DIRECTIONS, TRAJ_ID

if TYPE_CHECKING:
    from rich.console import Group

__all__ = ["city_info", "city_map", "info_table"]

TOP_CLASSES = 5
_GEOMETRY_LAYERS = ("pois", "roads", "regions", "svi", "trajectories")


def city_info(root: City | Path | str) -> dict[str, Any]:
    """Summarise a bundle (validated on load).

    Returns:
        ``name``, ``root``, ``crs``, ``crs_guessed`` (no ``crs`` in city.toml: the UTM zone
        of the POIs), ``bbox`` ``[min_lon, min_lat, max_lon, max_lat]``, ``layers`` (per
        present layer: ``file``, ``count`` and layer details) and ``labels`` (per label:
        level, kind, labelled, total, coverage; regression: min/mean/max; classification:
        number of classes and the top class counts).

    Raises:
        CityError: The bundle is not valid (one line).
    """
    city = _load(root)
    manifest = read_manifest(city.root)
    bounds = np.array(
        [city.layer(k).geometry.total_bounds for k in _GEOMETRY_LAYERS if city.has(k)]
    )
    bbox = [*bounds[:, :2].min(axis=0), *bounds[:, 2:].max(axis=0)]
    return {
        "name": city.name,
        "root": str(city.root),
        "crs": city.crs,
        "crs_guessed": not manifest.get("crs"),
        "bbox": [round(float(v), 6) for v in bbox],
        "layers": {k: {"file": city.files[k], **_layer(city, k)} for k in LAYERS if city.has(k)},
        "labels": {name: _label(city, name) for name in city.labels},
    }


def _load(root: City | Path | str) -> City:
    """A City as given, or loaded (and so validated) from its directory."""
    return root if isinstance(root, City) else City.load(root)


def city_map(root: City | Path | str, path: Path | str) -> Path:
    """Draw the bundle as a PNG: regions (coloured by the first region regression label,
    grey where unlabelled), roads and POIs, in the bundle's metric CRS."""
    from mfm.plots import city_map as draw

    city = _load(root)
    metric = {k: city.layer(k).to_crs(city.crs) for k in ("regions", "roads") if city.has(k)}
    values, name = None, ""
    task = next(
        (t for t, s in city.labels.items() if s.level == "region" and s.kind == "regression"),
        None,
    )
    if task is not None and "regions" in metric:
        labels = city.read_labels(task).set_index("id")["value"]
        values = city.regions[REGION_ID].map(labels).to_numpy(dtype=float)
        name = task
    return draw(
        metric.get("regions"),
        path,
        roads=metric.get("roads"),
        pois=city.pois.to_crs(city.crs),
        values=values,
        value_name=name,
        title=f"{city.name}: {len(city.pois):,} POIs"
        + (f", {len(city.regions):,} regions" if city.has("regions") else ""),
    )


def _layer(city: City, layer: str) -> dict[str, Any]:
    """Row count and the details that matter for one layer."""
    import shapely

    frame = city.layer(layer)
    out: dict[str, Any] = {"count": len(frame)}
    if layer == "pois":
        fp = frame[FOOTPRINT].to_numpy() if FOOTPRINT in frame.columns else np.array([None])
        out["footprints"] = int((~(shapely.is_missing(fp) | shapely.is_empty(fp))).sum())
    elif layer == "roads":
        length = frame.geometry.to_crs(city.crs).length.to_numpy(dtype=float)
        out["length_km"] = round(float(np.nansum(length)) / 1000.0, 3)
    elif layer == "regions":
        area = city.region_area_m2() / 1e6
        out["median_area_km2"] = round(float(np.median(area)), 6)
        out["area_km2"] = round(float(area.sum()), 6)
    elif layer == "svi":
        cols = [c for c in SVI_DIRECTIONS if c in frame.columns]
        out["images"] = int(frame[cols].notna().to_numpy().sum())
    elif layer == "satellite":
        out["regions"] = int(frame[REGION_ID].nunique())
    elif layer == "trajectories":
        out["count"] = int(frame[TRAJ_ID].nunique())
        out["points"] = len(frame)
    return out


def _label(city: City, name: str) -> dict[str, Any]:
    """Level, kind, how many items are labelled and what the values look like."""
    spec = city.labels[name]
    df = city.read_labels(name)
    total = len(city.layer(LEVEL_LAYER[spec.level]))
    out: dict[str, Any] = {
        "path": city.label_files[name],
        "level": spec.level,
        "kind": spec.kind,
        "labelled": len(df),
        "total": total,
        "coverage": round(len(df) / total, 6) if total else 0.0,
    }
    if spec.kind == "regression":
        v = df["value"].to_numpy(dtype=float)
        if len(v):
            out.update(min=float(v.min()), mean=float(v.mean()), max=float(v.max()))
    else:
        counts = df["label"].astype(str).value_counts()
        counts = counts.sort_index().sort_values(ascending=False, kind="stable")
        out["classes"] = len(counts)
        out["top"] = {str(k): int(n) for k, n in counts.head(TOP_CLASSES).items()}
    return out


def _num(v: float) -> str:
    """A compact number: thousands separators above 1,000, else 4 significant digits."""
    v = float(v)
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def _details(layer: str, d: dict[str, Any]) -> str:
    if layer == "pois":
        return f"{d['footprints']:,} with footprints"
    if layer == "roads":
        return f"{_num(d['length_km'])} km"
    if layer == "regions":
        return f"median {_num(d['median_area_km2'])} km², total {_num(d['area_km2'])} km²"
    if layer == "svi":
        return f"{d['images']:,} images"
    if layer == "satellite":
        return f"{d['regions']:,} regions"
    if layer == "trajectories":
        return f"{d['points']:,} points"
    return ""


def _values(d: dict[str, Any]) -> str:
    if d["kind"] == "regression":
        if "min" not in d:
            return ""
        return f"min {_num(d['min'])}, mean {_num(d['mean'])}, max {_num(d['max'])}"
    top = ", ".join(f"{k} {n:,}" for k, n in d["top"].items())
    return f"{d['classes']} classes: {top}" + (", ..." if d["classes"] > len(d["top"]) else "")


def info_table(info: dict[str, Any]) -> Group:
    """Render :func:`city_info`'s dict: a header, a layers table and a labels table."""
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("city", f"{info['name']} ({info['root']})")
    crs = info["crs"] + (" (guessed: UTM zone of the POIs)" if info["crs_guessed"] else "")
    head.add_row("crs", crs)
    x0, y0, x1, y1 = info["bbox"]
    head.add_row("bbox", f"lon {x0:.5f} .. {x1:.5f}, lat {y0:.5f} .. {y1:.5f}")

    layers = Table(title="layers", title_justify="left")
    for col, justify in [("layer", "left"), ("rows", "right"), ("details", "left")]:
        layers.add_column(col, justify=justify)  # type: ignore[arg-type]
    layers.add_column("file", style="dim")
    for name, d in info["layers"].items():
        what = " trajectories" if name == "trajectories" else ""
        layers.add_row(name, f"{d['count']:,}{what}", _details(name, d), d["file"])

    parts: list[Any] = [head, layers]
    if info["labels"]:
        labels = Table(title="labels", title_justify="left")
        for col in ("label", "level", "kind", "labelled", "coverage", "values"):
            labels.add_column(col, justify="right" if col in ("labelled", "coverage") else "left")
        for name, d in info["labels"].items():
            labels.add_row(
                name,
                d["level"],
                d["kind"],
                f"{d['labelled']:,} / {d['total']:,}",
                f"{d['coverage']:.1%}",
                _values(d),
            )
        parts.append(labels)
    else:
        parts.append("labels: none (add some with `mfm city add-labels`)")
    return Group(*parts)
