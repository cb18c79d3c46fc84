from alignctl.data.sources import gsm8k
from alignctl.errors import DataError

from ._helpers import one_line_error, rows_of, write_jsonl

ROWS = [  # openai/gsm8k's columns: question, answer (worked solution, "#### <final answer>")
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
               "altogether in April and May.\n#### 72"},
    {"question": "A shop sells 1,000 pens a day for 1.234 days... how many pens?  ",
     "answer": "It sells 1000*1.234 = <<1000*1.234=1234>>1234 pens.\n#### 1,234"},
    {"question": "The temperature was 3 and fell by 8. What is it now?", "answer": "3-8 = <<3-8=-5>>-5\n#### -5"},
    {"question": "Weng earns $12 an hour. How much did she earn for 50 minutes?",
     "answer": "12/60 = $<<12/60=0.2>>0.2 per minute.\n0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
    {"question": "Big number?", "answer": "a #### mid-text marker, then\n#### 12,345,678"},
    {"question": "Half of 5?", "answer": "5/2 = 2.5\n#### 2.5"},
]  # fmt: skip
ANSWERS = ["72", "1234", "-5", "10", "12345678", "2.5"]


def test_prompts_answers_and_completions(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", ROWS)
    cfg = gsm8k.Gsm8kConfig(path=str(path), test_size=2)
    data = gsm8k.load(cfg)
    expected = [
        {"prompt": f"Question: {r['question'].strip()}\nAnswer:", "answer": a, "completion": " " + r["answer"]}
        for r, a in zip(ROWS, ANSWERS)
    ]
    got = rows_of(data["train"]) + rows_of(data["test"])
    assert (len(data["train"]), len(data["test"])) == (4, 2)
    assert sorted(got, key=expected.index) == expected
    assert data["train"].column_names == ["prompt", "answer", "completion"]
    assert expected[0]["prompt"].startswith("Question: Natalia sold clips")
    assert expected[1]["prompt"].endswith("how many pens?\nAnswer:")  # the question stripped

    lookup = gsm8k.ENTRY.answers(cfg)  # both splits
    assert [lookup(row["prompt"]) for row in expected] == ANSWERS
    assert lookup("Question: something else\nAnswer:") is None


def test_solution_without_a_final_number_names_the_row(tmp_path):
    rows = [*ROWS[:3], {"question": "Q?", "answer": "no marker here"}, {"question": "R?", "answer": "x\n#### twelve"}]
    cfg = gsm8k.Gsm8kConfig(path=str(write_jsonl(tmp_path / "g.jsonl", rows)), test_split=None, test_size=1)
    words = ("column 'answer'", "row 3", "'#### <number>'", "'no marker here'")
    one_line_error(DataError, lambda: gsm8k.load(cfg), *words)
    rows[3] = ROWS[3]
    cfg = gsm8k.Gsm8kConfig(path=str(write_jsonl(tmp_path / "g2.jsonl", rows)), test_split=None, test_size=1)
    one_line_error(DataError, lambda: gsm8k.load(cfg), "row 4", "its last line is '#### twelve'")


def test_entry_and_defaults():
    cfg = gsm8k.Gsm8kConfig()
    fields = (cfg.name, cfg.path, cfg.subset, cfg.split, cfg.test_split)
    assert fields == ("gsm8k", "openai/gsm8k", "main", "train", "test")
    assert gsm8k.ENTRY.rewards == ("exact_match", "function", "classifier")
    assert gsm8k.ENTRY.rows == "prompts" and gsm8k.ENTRY.completions


def test_a_plain_folder_of_split_files_ignores_the_hub_config_name(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", ROWS[:4])
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", ROWS[4:])
    data = gsm8k.load(gsm8k.Gsm8kConfig(path=str(tmp_path / "gsm8k")))  # subset="main": no such config here
    assert (list(data["train"]["answer"]), list(data["test"]["answer"])) == (ANSWERS[:4], ANSWERS[4:])
