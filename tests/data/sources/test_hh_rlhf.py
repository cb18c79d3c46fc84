from alignctl.data.sources import hh_rlhf
from alignctl.errors import DataError

from ._helpers import one_line_error, rows_of, write_jsonl

H, A = "\n\nHuman:", "\n\nAssistant:"
# (chosen, rejected) -> (prompt, chosen, rejected), in the real schema: two whole dialogues per row.
CASES = [
    (  # one turn
        (f"{H} What is a good pie?{A} Apple pie is a classic.", f"{H} What is a good pie?{A} I don't know."),
        (f"{H} What is a good pie?{A}", " Apple pie is a classic.", " I don't know."),
    ),
    (  # several turns: the prompt is everything up to the last shared assistant marker
        (f"{H} Hi{A} Hello!{H} A joke?{A} Why did the hen cross?", f"{H} Hi{A} Hello!{H} A joke?{A} No."),
        (f"{H} Hi{A} Hello!{H} A joke?{A}", " Why did the hen cross?", " No."),
    ),
    (  # replies sharing their first words: the prompt still ends at the marker
        (f"{H} Is it safe?{A} I think so, yes.", f"{H} Is it safe?{A} I think not."),
        (f"{H} Is it safe?{A}", " I think so, yes.", " I think not."),
    ),
    (  # dialogues that part at an earlier assistant turn: the rest of each is its completion
        (f"{H} A{A} B{H} C{A} D", f"{H} A{A} X{H} C{A} Y"),
        (f"{H} A{A}", f" B{H} C{A} D", f" X{H} C{A} Y"),
    ),
    (  # an empty reply (the real data has a few): kept, as the empty completion
        (f"{H} Say nothing.{A}", f"{H} Say nothing.{A} Something."),
        (f"{H} Say nothing.{A}", "", " Something."),
    ),
    (  # a reply that quotes the marker text inside a line
        (f"{H} Quote it{A} Assistant: yes", f"{H} Quote it{A} no"),
        (f"{H} Quote it{A}", " Assistant: yes", " no"),
    ),
]  # fmt: skip


def test_split_dialogues_on_the_last_shared_assistant_marker(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": c, "rejected": r} for (c, r), _ in CASES])
    cfg = hh_rlhf.HhRlhfConfig(path=str(path), test_size=2)
    data = hh_rlhf.load(cfg)
    expected = [dict(zip(("prompt", "chosen", "rejected"), out)) for _, out in CASES]
    train, test = rows_of(data["train"]), rows_of(data["test"])
    assert (len(train), len(test)) == (4, 2)
    assert sorted(train + test, key=expected.index) == expected
    assert train == [row for row in expected if row in train]  # source order kept
    assert data["train"].column_names == ["prompt", "chosen", "rejected"]


def test_dialogues_without_a_shared_prompt_name_the_row(tmp_path):
    rows = [{"chosen": c, "rejected": r} for (c, r), _ in CASES[:4]]
    rows.append({"chosen": f"{H} A{A} B", "rejected": f"{H} Z{A} B"})
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    cfg = hh_rlhf.HhRlhfConfig(path=str(path), test_split=None, test_size=1, seed=3)
    words = (f"dataset.path={path}", "column 'chosen'", "row 4 of split 'train'", "share no prefix ending in '\\n\\nAssistant:'")
    one_line_error(DataError, lambda: hh_rlhf.load(cfg), *words)


def test_defaults_name_the_hub_dataset():
    cfg = hh_rlhf.HhRlhfConfig()
    fields = (cfg.name, cfg.path, cfg.split, cfg.test_split, cfg.data_dir)
    assert fields == ("hh_rlhf", "Anthropic/hh-rlhf", "train", "test", None)
    entry = hh_rlhf.ENTRY
    assert (entry.name, entry.rows, entry.schema) == ("hh_rlhf", "preferences", hh_rlhf.HhRlhfConfig)
