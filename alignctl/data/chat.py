"""Conversational rows -> text, through the tokenizer's chat template, so that every trainer, the pair builder and
eval see one format: a text prompt (ending where the assistant's answer starts) and text completions continuing it.

Rendering follows TRL's conversational handling: the prompt is rendered with `add_generation_prompt=True`, the
prompt + completion without it, and the completion is the rest. When the tokenizer adds a BOS token itself and the
template writes one too, the template's is dropped from the prompt text (else every sequence would start with two).
"""

from __future__ import annotations

from typing import Any

from alignctl.errors import DataError, UsageError

COMPLETION_COLUMNS = ("chosen", "rejected", "completion")


def is_conversational(value: Any) -> bool:
    return isinstance(value, list)


def render(data, tokenizer, dataset_name: str):
    """Every split of a DatasetDict with conversational prompt/completion columns rendered to text; plain rows are
    returned as they are."""
    first = data["train"][0] if len(data["train"]) else {}
    if not is_conversational(first.get("prompt")):
        return data
    if not tokenizer.chat_template:
        raise UsageError(
            f"dataset={dataset_name} is conversational but the model's tokenizer has no chat template; set "
            "model.chat_template=<a .jinja file or the template text>"
        )
    bos = _template_bos(tokenizer)

    def row_text(row: dict[str, Any], index: int) -> dict[str, Any]:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        out = {"prompt": _strip_bos(prompt, bos)}
        for column in COMPLETION_COLUMNS:
            if column in row and row[column] is not None:
                out[column] = _completion_text(tokenizer, row["prompt"], row[column], prompt, column, index)
        return out

    return data.map(row_text, with_indices=True, keep_in_memory=True, desc="Rendering chat template")


def _completion_text(tokenizer, prompt_messages, completion, prompt_text: str, column: str, index: int) -> str:
    if not is_conversational(completion):
        raise DataError(f"{column} at row {index} is {type(completion).__name__}; a conversational row needs messages")
    full = tokenizer.apply_chat_template(prompt_messages + completion, tokenize=False)
    if not full.startswith(prompt_text):
        raise DataError(
            f"the chat template renders row {index}'s prompt differently with and without its {column} message; "
            "alignctl cannot split the completion off (set model.chat_template to a template that does)"
        )
    return full[len(prompt_text) :]


def _template_bos(tokenizer) -> str | None:
    """The BOS text to strip from rendered prompts: only when the tokenizer also adds BOS when it tokenizes."""
    bos = tokenizer.bos_token
    if not bos or tokenizer.bos_token_id is None:
        return None
    ids = tokenizer("x")["input_ids"]
    return bos if ids and ids[0] == tokenizer.bos_token_id else None


def _strip_bos(text: str, bos: str | None) -> str:
    return text[len(bos) :] if bos and text.startswith(bos) else text
