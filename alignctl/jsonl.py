"""JSON-lines files a run appends to (metrics.jsonl, curve.jsonl): one object per line, read back skipping a line a
killed process cut short."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


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
