"""The policy's completions on a prompt set, written in the formats of two external judges, for their own tools
to judge: AlpacaEval's ``model_outputs.json`` and Arena-Hard's answer file ``<model>.jsonl``. Pure file I/O: no
model, no network.

The formats, as read from the tools' sources:

- AlpacaEval (github.com/tatsu-lab/alpaca_eval at cd543a149df89434d8a54582c0151c0b945c3d20): ``alpaca_eval
  --model_outputs <file>`` reads the file with ``pd.read_json`` (``utils.load_or_convert_to_dataframe``: ``.json``,
  ``.csv`` or ``.tsv`` only, so a JSON list of objects here), takes the leaderboard name from the single
  ``generator`` value (``utils.get_generator_name``) and pairs each row with the reference output of the same
  ``instruction`` (``annotate_head2head`` merges on the annotator's input keys, ``instruction`` by default): the
  instruction must be the eval set's text, byte for byte. Rows: ``{"instruction", "output", "generator"}``, plus
  ``"dataset"`` when the prompt set has it (AlpacaEval's own eval set does: helpful_base, koala, ...).
- Arena-Hard (github.com/lmarena/arena-hard-auto at 196f6b826783b3da7310e361a805fa36f0be83f3; the format since
  v2.0, April 2025): ``gen_answer.py`` appends one JSON object per line to ``data/<bench>/model_answer/<model>.jsonl``:
  ``{"uid", "ans_id", "model", "messages": [{"role": "user", "content": <prompt>}, {"role": "assistant",
  "content": {"answer": <text>}}], "tstamp", "metadata"}`` and ``reorg_answer_file`` sorts the lines by uid.
  ``gen_judgment.py`` loads answers keyed by the file's stem and the line's ``uid`` (``load_model_answers``) and reads
  ``messages[-1]["content"]["answer"]``. (Before v2.0 it was ``{"question_id", "answer_id", "model_id", "choices":
  [{"index": 0, "turns": [{"content"}]}], "tstamp"}``: not written here.) ``metadata`` (``token_len`` counted with
  tiktoken's gpt-4o encoding, and markdown counts) is only read by ``show_result.py --control-features`` (style
  control); computing it needs tiktoken's downloaded encoding, so it is left out: run their
  ``utils/add_markdown_info.py --dir <model_answer folder> --output-dir <same>`` before style-controlled scoring.

Reproducibility: the same prompts and outputs give the same bytes. ``ans_id`` (a ``shortuuid.uuid()`` in
gen_answer.py, read by nothing) is a hash of (model, uid, prompt, output) written in shortuuid's 22-character
alphabet; ``tstamp`` (``time.time()`` in gen_answer.py, read by nothing in arena-hard-auto) is the caller's
``tstamp``: pass the run's end time to date the answers, or keep the default 0.0.

Prompt sets (``eval.export.prompts``): a ``.json`` list or ``.jsonl`` lines (told apart by the first character,
not the suffix) in either layout: AlpacaEval's eval set (``{"instruction", "dataset"?...}``, as in
``alpaca_eval.json``) or Arena-Hard's ``question.jsonl`` (``{"uid", "prompt", "category"?...}`` since v2.0, or
``{"question_id", "turns": [{"content"}], "category"?...}`` before). One-turn questions only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignctl.errors import DataError, UsageError

PROMPTS_FIELD = "eval.export.prompts"
ALPACA_EVAL_FILE = "model_outputs.json"
PROMPT_LAYOUTS = (
    'AlpacaEval rows {"instruction": ...} or Arena-Hard questions {"uid": ..., "prompt": ...} / '
    '{"question_id": ..., "turns": [{"content": ...}]}'
)
KEPT_COLUMNS = ("dataset", "category", "subcategory", "cluster")  # the judges group or filter by these
SHORTUUID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # shortuuid's default, 57 symbols
SHORTUUID_LENGTH = 22


# ---------------------------------------------------------------------------------------------------------------
# Prompt sets


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """A user's prompt set -> rows ``{"id": str, "prompt": str, "layout": "alpaca_eval" | "arena_hard"}`` plus the
    kept columns present (``dataset``, ``category``, ``subcategory``, ``cluster``), in file order.

    ``id``: Arena-Hard's ``uid`` (or ``question_id``) as a string; for AlpacaEval rows, which have none, the first
    16 hex digits of the instruction's sha256 (stable under reordering). ``prompt``: the instruction, ``prompt``, or
    the single turn's ``content``. A missing file, an unreadable line, a row without its layout's columns, an
    empty prompt, a repeated Arena-Hard id or no rows at all is a one-line UsageError naming
    ``eval.export.prompts``. The layout is the first row's: ``instruction`` -> AlpacaEval, else ``uid`` /
    ``question_id`` -> Arena-Hard; every row must then have that layout's columns."""
    where = f"{PROMPTS_FIELD}={path}"
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise UsageError(f"{where} {what}; give a .json or .jsonl file of {PROMPT_LAYOUTS}")
    rows = _read_json_rows(file, where)
    if not rows:
        raise DataError(f"{where} has no rows; give a .json or .jsonl file of {PROMPT_LAYOUTS}")
    layout = _layout(rows[0], where)
    out = [_prompt_row(row, i, layout, where) for i, row in enumerate(rows)]
    if layout == "arena_hard":
        seen: dict[str, int] = {}
        for i, row in enumerate(out):
            if row["id"] in seen:
                raise DataError(f"{where}: row {i} repeats the id {row['id']!r} of row {seen[row['id']]}")
            seen[row["id"]] = i
    return out


def _read_json_rows(file: Path, where: str) -> list[Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{where} could not be read ({type(e).__name__}: {e})") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise DataError(f"{where} is not valid JSON ({e})") from None
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise DataError(f"{where}: line {number} is not a JSON object ({e})") from None
    return rows


def _layout(row: Any, where: str) -> str:
    if isinstance(row, dict) and "instruction" in row:
        return "alpaca_eval"
    if isinstance(row, dict) and ("uid" in row or "question_id" in row):
        return "arena_hard"
    found = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
    raise DataError(f"{where}: row 0 has neither an instruction nor a uid/question_id (found: {found}); "
                    f"give {PROMPT_LAYOUTS}")  # fmt: skip


def _prompt_row(row: Any, index: int, layout: str, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: row {index} is not a JSON object (got {type(row).__name__})")
    if layout == "alpaca_eval":
        prompt = row.get("instruction")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: row {index} has no instruction (an AlpacaEval row needs a non-empty string)")
        qid = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
    else:
        key = "uid" if "uid" in row else "question_id"
        qid = row.get(key)
        if isinstance(qid, bool) or not isinstance(qid, (str, int)) or str(qid) == "":
            raise DataError(f"{where}: row {index} has no uid/question_id (an Arena-Hard question needs one)")
        qid = str(qid)
        prompt = _arena_prompt(row, index, where)
    out = {"id": qid, "prompt": prompt, "layout": layout}
    out.update({k: row[k] for k in KEPT_COLUMNS if k in row})
    return out


def _arena_prompt(row: dict, index: int, where: str) -> str:
    if "prompt" in row:
        prompt = row["prompt"]
    elif "turns" in row:
        turns = row["turns"]
        if not isinstance(turns, list) or len(turns) != 1:
            n = len(turns) if isinstance(turns, list) else type(turns).__name__
            raise DataError(f"{where}: row {index} has turns of {n} (only one-turn questions are exported)")
        turn = turns[0]
        prompt = turn.get("content") if isinstance(turn, dict) else turn
    else:
        raise DataError(
            f"{where}: row {index} has no prompt (an Arena-Hard question needs 'prompt' or 'turns': [{{'content'}}])"
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: row {index} has an empty prompt (a non-empty string is needed)")
    return prompt


# ---------------------------------------------------------------------------------------------------------------
# Writing


def write_alpaca_eval(
    path: str | Path,
    prompts: Sequence[str],
    outputs: Sequence[str],
    generator: str,
    *,
    datasets: Sequence[str | None] | None = None,
) -> Path:
    """AlpacaEval's model_outputs file: a JSON list of ``{"instruction", "output", "generator"[, "dataset"]}`` in
    prompt order (indent 2, UTF-8, not ASCII-escaped, as their results/*/model_outputs.json). ``path``: the file
    (``.json``) or a folder to write ``model_outputs.json`` into. Returns the file written."""
    _check_lengths(prompts=prompts, outputs=outputs, **({"datasets": datasets} if datasets is not None else {}))
    _check_name("generator", generator)
    file = _target(Path(path), ALPACA_EVAL_FILE, ".json")
    rows = []
    for i, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
        row = {"instruction": _text("prompts", i, prompt), "output": _text("outputs", i, output, empty=True),
               "generator": generator}  # fmt: skip
        if datasets is not None and datasets[i] is not None:
            row["dataset"] = datasets[i]
        rows.append(row)
    _write(file, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    return file


def write_arena_hard(
    path: str | Path,
    question_ids: Sequence[str],
    prompts: Sequence[str],
    outputs: Sequence[str],
    model_id: str,
    *,
    tstamp: float = 0.0,
) -> Path:
    """Arena-Hard's answer file: one line per question, sorted by uid (as their ``reorg_answer_file``):
    ``{"uid", "ans_id", "model", "messages": [user prompt, {"role": "assistant", "content": {"answer": output}}],
    "tstamp"}``. ``path``: a folder (their ``data/<bench>/model_answer``) to write ``<model_id>.jsonl`` into, or that
    file itself (the judge names a model by the file's stem, so the stem must be ``model_id``). Returns the file."""
    _check_lengths(question_ids=question_ids, prompts=prompts, outputs=outputs)
    _check_name("model_id", model_id)
    if "/" in model_id or "\\" in model_id:
        raise ValueError(f"model_id={model_id!r} contains a path separator (it names the answer file)")
    ids = [str(q) for q in question_ids]
    if any(not q for q in ids):
        raise ValueError("question_ids holds an empty id")
    if len(set(ids)) != len(ids):
        repeated = next(q for q in ids if ids.count(q) > 1)
        raise ValueError(f"question_ids repeats {repeated!r} (Arena-Hard keeps one answer per uid)")
    file = _target(Path(path), f"{model_id}.jsonl", ".jsonl")
    if file.stem != model_id:
        raise ValueError(f"{file} must be named {model_id}.jsonl: Arena-Hard names the model by the file's stem")
    lines = []
    for i in sorted(range(len(ids)), key=lambda j: ids[j]):
        prompt, output = _text("prompts", i, prompts[i]), _text("outputs", i, outputs[i], empty=True)
        answer = {
            "uid": ids[i],
            "ans_id": answer_id(model_id, ids[i], prompt, output),
            "model": model_id,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": {"answer": output}}],
            "tstamp": float(tstamp),
        }
        lines.append(json.dumps(answer, ensure_ascii=False) + "\n")
    _write(file, "".join(lines))
    return file


def answer_id(model_id: str, uid: str, prompt: str, output: str) -> str:
    """22 symbols of shortuuid's alphabet from sha256 of the answer's content: the same answer, the same id."""
    digest = hashlib.sha256(json.dumps([model_id, uid, prompt, output], ensure_ascii=False).encode("utf-8"))
    number = int.from_bytes(digest.digest(), "big")
    symbols = []
    for _ in range(SHORTUUID_LENGTH):
        number, digit = divmod(number, len(SHORTUUID_ALPHABET))
        symbols.append(SHORTUUID_ALPHABET[digit])
    return "".join(symbols)


def _check_lengths(**columns: Sequence[Any]) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("lengths differ: " + ", ".join(f"{k}={v}" for k, v in lengths.items()))


def _check_name(field: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} must be a non-empty string, got {value!r}")


def _text(field: str, index: int, value: Any, *, empty: bool = False) -> str:
    """A prompt (non-empty) or an output (may be empty: a model can stop at once) as a string."""
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError(f"{field}[{index}] must be a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def _target(path: Path, default_name: str, suffix: str) -> Path:
    """``path`` itself when it names a ``suffix`` file, else ``path/default_name`` (a folder, made if missing)."""
    if path.suffix == suffix and not path.is_dir():
        return path
    if path.suffix and not path.is_dir():
        raise ValueError(f"{path} must be a {suffix} file or a folder")
    return path / default_name


def _write(file: Path, text: str) -> None:
    """Whole-file write through a temporary name, so a killed export leaves the old file or the new one."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, file)
