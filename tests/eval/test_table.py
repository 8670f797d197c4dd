"""Rendering results as rich and markdown tables."""

from rich.console import Console

from mfm.eval.table import cell, markdown_table, rich_table

REGRESSION = {
    "task": "price",
    "level": "region",
    "kind": "regression",
    "split": "random",
    "runs": 10,
    "probe": "ridge",
    "n": 16,
    "dropped": 0,
    "results": {
        "mfm": {"rmse": [1.0, 0.1], "mae": [0.5, 0.05], "r2": [0.712, 0.031]},
        "random": {"rmse": [2.0, 0.2], "mae": [1.5, 0.1], "r2": [-0.1, 0.2]},
    },
}
CLASSIFICATION = {
    "task": "function",
    "level": "poi",
    "kind": "classification",
    "split": "spatial",
    "runs": 10,
    "probe": "ridge",
    "n": 150,
    "dropped": 2,
    "results": {
        m: {
            "macro_f1": [f, 0.01],
            "weighted_f1": [f + 0.1, 0.02],
            "per_class": {
                "residential": {"f1": [f, 0.1], "support": 17.5},
                "office": {"f1": [0.0, 0.0], "support": 3},
            },
        }
        for m, f in (("mfm", 0.6), ("counts", 0.5))
    },
}


def test_cell_format():
    assert cell([0.712, 0.031]) == "0.712 (0.031)"
    assert cell([None, None]) == "-"


def test_markdown_regression_marks_the_best_per_row():
    md = markdown_table(REGRESSION)
    assert md.startswith("### price: region regression, random split, 10 runs, ridge probe")
    assert "| metric | mfm | random |" in md
    assert "| RMSE | **1.000 (0.100)** | 2.000 (0.200) |" in md  # lower is better
    assert "| R2 | **0.712 (0.031)** | -0.100 (0.200) |" in md


def test_markdown_classification_has_per_class_rows_with_support():
    md = markdown_table(CLASSIFICATION)
    assert "| metric | support | mfm | counts |" in md
    assert "| macro F1 |  | **0.600 (0.010)** | 0.500 (0.010) |" in md
    assert "| F1 residential | 17.5 | **0.600 (0.100)** | 0.500 (0.100) |" in md
    assert "| F1 office | 3 | 0.000 (0.000) | 0.000 (0.000) |" in md  # a tie: no winner
    assert "2 labels dropped" in md


def test_rich_table_renders():
    console = Console(record=True, width=200)
    console.print(rich_table(CLASSIFICATION))
    text = console.export_text()
    assert "F1 residential" in text and "0.600 (0.010)" in text
