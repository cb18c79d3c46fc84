"""The option lists of README.md and docs/objectives.md, rendered from the registries (objectives, datasets,
rewards) and the config groups' YAMLs, so the docs cannot drift from the code: tests/test_docs.py fails when a
block differs, and `make docs` (python -m alignctl.cli.docs) rewrites the blocks in place.

A block sits between `<!-- generated: NAME -->` and `<!-- end generated -->` lines; nothing outside is touched."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from alignctl import objectives
from alignctl.cli import listing
from alignctl.config.schema import hyperparameter_rules


def objectives_table() -> str:
    """docs/objectives.md: one row per objective, from its registry entry and loss signature."""
    rows = ["| objective | what it optimises (paper) | hyperparameters: default (rule) | divergences (default first) "
            "| data | reference model |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, entry in sorted(objectives.REGISTRY.items()):
        hyper = "; ".join(
            f"`{key}`: {default}" + (f" ({listing.rule_text(rule)})" if rule else "")
            for key, default, rule in hyperparameter_rules(entry)
        ) or "-"
        cells = [f"`{name}`", entry.description, hyper, ", ".join(listing.divergences_default_first(entry)),
                 entry.data, listing.reference_model(entry)]  # fmt: skip
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def config_groups() -> str:
    """README.md: every config group with its options."""
    return "\n".join(f"- `{group}`: {', '.join(listing.options(group))}" for group in listing.GROUPS)


# file (relative to the repository root) -> block name -> renderer
BLOCKS: dict[str, dict[str, Callable[[], str]]] = {
    "README.md": {"config-groups": config_groups},
    "docs/objectives.md": {"objectives-table": objectives_table},
}
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def rendered(text: str, renderers: dict[str, Callable[[], str]]) -> str:
    """`text` with each generated block's body replaced by its renderer's output; a missing block is an error."""
    missing = set(renderers) - {m.group("name") for m in _BLOCK.finditer(text)}
    if missing:
        raise ValueError(f"no generated block named {', '.join(sorted(missing))}")
    return _BLOCK.sub(lambda m: m.group(1) + renderers[m.group("name")]().rstrip("\n") + "\n" + m.group(4), text)


def write(root: Path) -> list[str]:
    """Rewrite every block under `root`; returns the files that changed."""
    changed = []
    for relative, renderers in BLOCKS.items():
        path = root / relative
        text = path.read_text()
        new = rendered(text, renderers)
        if new != text:
            path.write_text(new)
            changed.append(relative)
    return changed


if __name__ == "__main__":
    changed = write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
    print("rewrote " + ", ".join(changed) if changed else "docs up to date")
