"""JSON-lines files a run appends to (metrics.jsonl, curve.jsonl): one object per line, strict JSON (a non-finite
number is written as null and its key listed under "nonfinite", since NaN/Infinity are not JSON and other tools
refuse them), read back skipping a line a killed process cut short."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

NONFINITE_KEY = "nonfinite"  # the keys of a row whose values were NaN or +-inf (written as null)


def strict(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every non-finite float (also inside lists and dicts) replaced by None and the top-level keys
    holding one named under NONFINITE_KEY."""
    bad = [key for key, value in row.items() if _has_nonfinite(value)]
    if not bad:
        return row
    return {**{k: _finite(v) if k in bad else v for k, v in row.items()}, NONFINITE_KEY: bad}


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_nonfinite(v) for v in value)
    return False


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(strict(row), allow_nan=False) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    """Every whole JSON object of the file, in order ([] when there is no file)."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else ():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
