"""Render an ``evaluate`` result as a rich table (terminal) or a markdown table (files).

Rows are metrics, columns are methods, cells are ``mean (std)`` over the runs, and the best
mean of each row is highlighted. Classification: macro and weighted F1, then one F1 row per
class with its mean test support.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

_REGRESSION = (("RMSE", "rmse", min), ("MAE", "mae", min), ("R2", "r2", max))
_CLASSIFICATION = (("macro F1", "macro_f1", max), ("weighted F1", "weighted_f1", max))


def cell(pair: list[float | None] | None) -> str:
    """``[0.712, 0.031]`` -> ``"0.712 (0.031)"``; ``"-"`` where undefined."""
    if not pair or pair[0] is None:
        return "-"
    std = "-" if pair[1] is None else f"{pair[1]:.3f}"
    return f"{pair[0]:.3f} ({std})"


def title(result: dict[str, Any]) -> str:
    """One line saying what was evaluated and how."""
    text = (
        f"{result['task']}: {result['level']} {result['kind']}, {result['split']} split, "
        f"{result['runs']} runs, {result['probe']} probe"
    )
    if "n" in result:
        text += f", n={result['n']}"
    if result.get("dropped"):
        text += f" ({result['dropped']} labels dropped: no embedding)"
    return text


def margin_line(result: dict[str, Any]) -> str:
    """``mfm - best baseline (text): +0.012 R2, within one std (0.031)``; "" without one."""
    m = result.get("margin")
    if not m:
        return ""
    metric = "R2" if m["metric"] == "r2" else "macro F1"
    verdict = "beyond" if m["beyond_std"] else "within"
    line = (
        f"mfm - best baseline ({m['best']}): {m['value']:+.3f} {metric}, "
        f"{verdict} one std ({m['std']:.3f})"
    )
    missing = result.get("missing") or {}
    if missing:
        line += "; not computed: " + "; ".join(f"{k} ({v})" for k, v in missing.items())
    return line


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]], list[set[int]]]:
    """(header, rows of cells, columns of the best mean per row (none when all tie))."""
    methods = list(result["results"])
    res = result["results"]
    classification = result["kind"] == "classification"
    header = ["metric", *(["support"] if classification else []), *methods]
    lead = 2 if classification else 1
    rows: list[list[str]] = []
    best: list[set[int]] = []

    def add(label: str, extra: list[str], pairs: list[Any], pick: Any) -> None:
        rows.append([label, *extra, *(cell(p) for p in pairs)])
        shown = [cell([p[0], 0.0]) if p and p[0] is not None else None for p in pairs]
        means = {i: p[0] for i, p in enumerate(pairs) if shown[i] is not None}
        top = pick(means.values()) if means else None
        winners = {i for i, m in means.items() if shown[i] == cell([top, 0.0])}
        best.append({lead + i for i in winners} if 0 < len(winners) < len(means) else set())

    specs = _CLASSIFICATION if classification else _REGRESSION
    for label, key, pick in specs:
        add(label, [""] * (lead - 1), [res[m].get(key) for m in methods], pick)
    if classification:
        classes: dict[str, Any] = {}
        for m in methods:  # every method has the same classes (same splits); keep first order
            for c, v in res[m].get("per_class", {}).items():
                classes.setdefault(c, v["support"])
        for c, support in classes.items():
            pairs = [res[m].get("per_class", {}).get(c, {}).get("f1") for m in methods]
            add(f"F1 {c}", [str(support)], pairs, max)
    return header, rows, best


def rich_table(result: dict[str, Any]) -> Table:
    """A rich Table of an ``evaluate`` result (best mean per row in bold green)."""
    header, rows, best = table_rows(result)
    table = Table(
        title=title(result),
        title_justify="left",
        caption=margin_line(result) or None,
        caption_justify="left",
    )
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row, b in zip(rows, best, strict=True):
        table.add_row(*(f"[bold green]{v}[/]" if i in b else v for i, v in enumerate(row)))
    return table


def markdown_table(result: dict[str, Any]) -> str:
    """A markdown section: a title line, then the table (best mean per row in bold)."""
    header, rows, best = table_rows(result)
    lines = [f"### {title(result)}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for row, b in zip(rows, best, strict=True):
        lines.append(
            "| " + " | ".join(f"**{v}**" if i in b else v for i, v in enumerate(row)) + " |"
        )
    if margin_line(result):
        lines += ["", margin_line(result)]
    return "\n".join(lines) + "\n"
