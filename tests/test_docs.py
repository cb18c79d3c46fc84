"""The option lists in README.md and docs/objectives.md are the registries' (alignctl.cli.docs renders them):
a new objective, dataset or reward, or a changed default or value rule, fails here until `make docs` is run."""

from pathlib import Path

import pytest

from alignctl import objectives
from alignctl.cli import docs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("relative", sorted(docs.BLOCKS))
def test_generated_blocks_match_the_registries(relative):
    text = (ROOT / relative).read_text()
    assert docs.rendered(text, docs.BLOCKS[relative]) == text, f"{relative} is stale: run make docs"


def test_the_objectives_table_has_every_objective_and_its_rules():
    table = docs.objectives_table()
    for name in objectives.REGISTRY:
        assert f"| `{name}` |" in table
    assert "`beta`: 0.1 (> 0)" in table.split("| `dpo` |")[1].split("\n")[0]
    adpo = table.split("| `adpo` |")[1].split("\n")[0]
    assert "`tau`: 10.0 (> 0)" in adpo and "label_noise" not in adpo  # dataset.label_noise, every pairwise objective's


def test_a_stale_or_missing_block_is_caught():
    stale = "intro\n<!-- generated: config-groups -->\n- `objective`: dpo\n<!-- end generated -->\nrest\n"
    fresh = docs.rendered(stale, {"config-groups": docs.config_groups})
    assert fresh != stale and fresh.startswith("intro\n") and fresh.endswith("<!-- end generated -->\nrest\n")
    assert "- `objective`: adpa," in fresh
    with pytest.raises(ValueError, match="objectives-table"):
        docs.rendered(stale, {"objectives-table": docs.objectives_table})
