"""Small local files in the real schemas of the hub datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignctl.errors import UsageError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))
    return path


def canonical(row: dict) -> str:
    """A sort key for rows compared as sets."""
    return json.dumps(row, sort_keys=True)


def rows_of(split) -> list[dict]:
    return [dict(row) for row in split]


def one_line_error(kind: type[UsageError], fn, *parts: str) -> str:
    """Call fn, expect `kind`, check the message is one line containing every part; return it."""
    with pytest.raises(kind) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in: {message}"
    return message
