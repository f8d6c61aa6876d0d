"""docs/results.json, the machine-readable results table (issue 13): every row has the fields a script
reads, and a missing number is explained rather than silently absent."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROWS = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results.json").read_text())
REQUIRED = ("key", "name", "preset", "iou", "miou", "rayiou", "precision", "recall", "steps")
REQUIRED += ("train_minutes", "device", "date", "command")


def test_keys_are_unique():
    keys = [row["key"] for row in ROWS]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


@pytest.mark.parametrize("row", ROWS, ids=[row["key"] for row in ROWS])
def test_row_fields(row):
    missing = [k for k in REQUIRED if k not in row]
    assert not missing, f"{row['key']}: missing {missing}"
    for k in ("iou", "miou", "rayiou", "precision", "recall"):
        v = row[k]
        ok = v is None or (isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= 100)
        assert ok, (row["key"], k, v)
    assert row["iou"] is not None and row["miou"] is not None, row["key"]
    trained = "train.cli" in row["command"] or "gausstr-train" in row["command"]
    # steps and minutes belong to trainings; a baseline has neither
    assert (row["steps"] is not None) == trained, row["key"]
    assert (row["train_minutes"] is not None) == trained, row["key"]
    if row["precision"] is None:
        # precision is undefined when nothing is predicted occupied (recall 0); anything else is a
        # number that did not come back, and the row must say so
        assert row["recall"] == 0.0 or "missing" in row.get("source", ""), row["key"]
    if row["recall"] is None:
        assert "missing" in row.get("source", ""), row["key"]
    assert row["date"][:4] == "2026" and len(row["date"]) == 10, row["key"]
