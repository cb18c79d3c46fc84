"""Pairwise judges for `alignctl eval`: per prompt, is the policy's completion better than the reference's?

Two judges share one interface (`PairwiseJudge.judge(prompts, policy_outputs, reference_outputs)`):

* `HFJudge`: a local Hugging Face causal LM. It does not generate: it compares its log-probabilities of the answers
  "A", "B" and "tie" right after the filled template (a constrained choice, batched with left padding), which stays
  meaningful for small judges that would ramble; the raw answer is the three log-probs.
* `OpenAIJudge`: any OpenAI-compatible chat-completions endpoint through the official `openai` client, with a
  bounded thread pool, explicit retries with exponential backoff, an up-front `check()`, and every single-order
  answer cached on disk (`VerdictCache`) as it arrives, so a rerun or a second sweep asks nothing twice.

Each pair is judged in both orders (the policy shown as A, then as B) to cancel position bias, and the two answers
are combined as MT-Bench does (`combine`): agreeing orders name the winner, disagreeing ones make a tie, an
unparseable answer makes the verdict unparseable (never a win). `win_rate` turns verdicts into a win rate with
ties as 1/2 and its standard error. Errors are one line (`UsageError`; `JudgeError` mid-evaluation).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import openai
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from alignctl.errors import UsageError
from alignctl.models.files import quiet
from alignctl.models.loading import check_source, names_local_path

Answer = Literal["A", "B", "tie"]
Winner = Literal["policy", "reference", "tie"]
ANSWERS: tuple[Answer, ...] = ("A", "B", "tie")
PLACEHOLDERS = ("prompt", "output_a", "output_b")

DEFAULT_TEMPLATE = """\
You are comparing two responses to the same prompt. Decide which response is better: more helpful, more \
correct and more relevant to the prompt. Do not let the order of the responses or their length decide.

[Prompt]
{prompt}

[Response A]
{output_a}

[Response B]
{output_b}

Which response is better? Answer with exactly one of: A, B, tie.
Answer:"""


class JudgeError(UsageError):
    """A judge that failed mid-evaluation (retries exhausted, or a request the endpoint refused): one line saying how
    many verdicts are cached and that a rerun continues from them."""


# --------------------------------------------------------------------------------------------------
# verdicts: parsing one answer, combining the two orders, the win rate


@dataclass(frozen=True)
class Verdict:
    """One prompt's verdict from both orders. `winner` is None when either order's answer was unparseable.
    `raw_policy_a` / `raw_policy_b`: the judge's raw answer with the policy shown as A / as B (the reply text for
    `OpenAIJudge`, {answer: log-prob} for `HFJudge`); `policy_a` / `policy_b` are those answers parsed."""

    winner: Winner | None
    policy_a: Answer | None
    policy_b: Answer | None
    raw_policy_a: Any
    raw_policy_b: Any


# [[A]], [[B]], [[C]] (MT-Bench's tie), [[tie]]
_BRACKETED = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
# the whole reply is the answer: "A", "(b)", "Response A.", "**tie**", "Answer: B"
_WHOLE = re.compile(
    r"^(?:(?:final\s+)?(?:answer|verdict|winner|choice)\s*[:=-]?\s*)?(?:(?:response|output|assistant)\s*)?"
    r"\(?(A|B|tie)\)?$",
    re.IGNORECASE,
)
# Below, (?-i:[AB]) keeps the letters upper case: "I prefer a shorter one", "the answer is a tie" name no side.
# a side called better: "Response B is better", "A is clearly the better one", "I prefer output A"
_BETTER = re.compile(
    r"\b((?-i:[AB]))\)?\s+(?:is|was)\s+(?:(?:clearly|much|slightly|definitely|the|a)\s+)*"
    r"(?:better|best|preferred|superior|stronger|more\s+\w+)"
    r"|\bprefer(?:red)?\s+(?:(?:response|output|assistant)\s+)?\(?((?-i:[AB]))\b",
    re.IGNORECASE,
)
# an answer declared: "Answer: A", "The final verdict is tie", "Winner = B"
_DECLARED = re.compile(
    r"\b(?:answer|verdict|winner|choice)\s*(?:is\s*)?[:=-]?\s*(?:(?:response|output|assistant)\s+)?"
    r"\(?\b((?-i:[AB])|tie)\b",
    re.IGNORECASE,
)
_TIE = re.compile(r"\btie\b|\bequally\s+(?:good|bad|helpful|strong|weak)\b|\bboth\s+(?:are\s+)?equal",
                  re.IGNORECASE)
_LONE_LETTER = re.compile(r"(?<![\w'])([AB])(?![\w'])")  # upper case only: "a" is an article


def parse_answer(text: str | None) -> Answer | None:
    """The judge's answer in `text`: "A", "B", "tie", or None when it names none, or several in the same form.

    Forms tried in order; the first one found decides: MT-Bench's [[A]]/[[B]]/[[C]] (C is a tie); the whole reply
    being an answer ("B", "(a)", "Response A.", "**tie**"); a side called better ("Response B is better", "I prefer
    A"); a declared answer ("Answer: A", "The verdict is tie"); a tie in words ("it's a tie", "equally good");
    finally a lone upper-case A or B. Case is ignored except in that last form, where "a" is an article.
    """
    if not text or not text.strip():
        return None
    whole = _WHOLE.match(_strip_decoration(text))
    for found in (
        _BRACKETED.findall(text),
        [whole.group(1)] if whole else [],
        [a or b for a, b in _BETTER.findall(text)],
        _DECLARED.findall(text),
        _TIE.findall(text) and ["tie"],
        _LONE_LETTER.findall(text),
    ):
        answers = {_letter(f) for f in found}
        if answers:
            return answers.pop() if len(answers) == 1 else None
    return None


def _strip_decoration(text: str) -> str:
    """Markdown emphasis, quotes and the final full stop around a short reply: '**"A".**' -> 'A'."""
    return text.strip().strip("*_`'\" \t\n").rstrip(".!").strip("*_`'\" \t\n")


def _letter(found: str) -> Answer:
    low = found.lower()
    return "tie" if low in ("tie", "c") else low.upper()  # type: ignore[return-value]


def combine(policy_a: Answer | None, policy_b: Answer | None) -> Winner | None:
    """MT-Bench's rule over the two orders (`policy_a`: the answer with the policy shown as A; `policy_b`: shown as
    B): either unparseable -> None; both name the same side -> that side; otherwise (disagreement, or a tie in
    either order) -> "tie"."""
    if policy_a is None or policy_b is None:
        return None
    first = {"A": "policy", "B": "reference", "tie": "tie"}[policy_a]
    second = {"A": "reference", "B": "policy", "tie": "tie"}[policy_b]
    return first if first == second else "tie"  # type: ignore[return-value]


_OUTCOME = {"policy": 1.0, "reference": 0.0, "tie": 0.5, None: None}


def outcomes(verdicts: Sequence[Verdict]) -> list[float | None]:
    """Per prompt: 1 (policy wins), 0 (reference wins), 0.5 (tie), None (unparseable); for fitting a
    length-controlled win rate elsewhere."""
    return [_OUTCOME[v.winner] for v in verdicts]


def win_rate(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The policy's win rate over the parseable verdicts, ties counting 1/2: mean of `outcomes`.

    `stderr` is the sample standard deviation of the per-prompt outcomes (ddof=1) over sqrt(n): with ties the
    outcomes are not Bernoulli, so sqrt(p(1-p)/n) would overstate it. Counts: `judged` (parseable verdicts, n),
    `wins`, `losses`, `ties`, `unparseable`. With n=0 the rate and its error are None, with n=1 the error is.
    """
    scores = [o for o in outcomes(verdicts) if o is not None]
    n = len(scores)
    rate = math.fsum(scores) / n if n else None
    stderr = None
    if n > 1:
        variance = math.fsum((s - rate) ** 2 for s in scores) / (n - 1)
        stderr = math.sqrt(variance / n)
    return {
        "win_rate": rate,
        "stderr": stderr,
        "judged": n,
        "wins": scores.count(1.0),
        "losses": scores.count(0.0),
        "ties": scores.count(0.5),
        "unparseable": len(verdicts) - n,
    }


# --------------------------------------------------------------------------------------------------
# the interface shared by the judges


class Query(NamedTuple):
    """One single-order question to a judge."""

    prompt: str
    output_a: str
    output_b: str


def check_template(template: str) -> str:
    """A template names each of {prompt}, {output_a}, {output_b}; other braces are left as they are."""
    missing = [f"{{{name}}}" for name in PLACEHOLDERS if f"{{{name}}}" not in template]
    if missing:
        raise UsageError(f"eval.judge.template={_short(template)} lacks {', '.join(missing)}; expected a template "
                         "with {prompt}, {output_a} and {output_b}")  # fmt: skip
    return template


TEMPLATE_SUFFIXES = (".txt", ".md", ".jinja", ".j2", ".tmpl", ".template")


def read_template(value: str | None) -> str:
    """eval.judge.template: None is `DEFAULT_TEMPLATE`; an existing file, or a one-line value ending in one of
    `TEMPLATE_SUFFIXES`, is read (UTF-8); anything else is the template text. Checked by `check_template`."""
    if value is None:
        return DEFAULT_TEMPLATE
    path = Path(value).expanduser()
    if "\n" not in value and (value.endswith(TEMPLATE_SUFFIXES) or path.is_file()):
        try:
            return check_template(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"eval.judge.template={value} is not a readable file ({_first_line(e)}); expected a "
                             "template file or the template text with {prompt}, {output_a} and {output_b}") from None
    return check_template(value)


def fill(template: str, query: Query) -> str:
    """The template with its placeholders replaced in one pass (a completion that contains '{output_b}' or other
    braces stays as written)."""
    values = {"prompt": query.prompt, "output_a": query.output_a, "output_b": query.output_b}
    return re.sub(r"\{(prompt|output_a|output_b)\}", lambda m: values[m.group(1)], template)


class PairwiseJudge(ABC):
    """Judges each (prompt, policy output, reference output) in both orders and combines the two answers."""

    identity: str  # names the judge in cache keys and reports
    template: str

    def judge(self, prompts: list[str], policy_outputs: list[str], reference_outputs: list[str]) -> list[Verdict]:
        """One `Verdict` per prompt, in order."""
        if not len(prompts) == len(policy_outputs) == len(reference_outputs):
            raise ValueError(f"judge: {len(prompts)} prompts, {len(policy_outputs)} policy outputs, "
                             f"{len(reference_outputs)} reference outputs; expected one of each a prompt")  # fmt: skip
        queries = []
        for prompt, policy, reference in zip(prompts, policy_outputs, reference_outputs):
            queries += [Query(prompt, policy, reference), Query(prompt, reference, policy)]
        answers = self.answer(queries)
        return [_verdict(answers[i], answers[i + 1]) for i in range(0, len(answers), 2)]

    @abstractmethod
    def answer(self, queries: list[Query]) -> list[tuple[Answer | None, Any]]:
        """(parsed answer, raw answer) per single-order query, in order."""


def _verdict(policy_a: tuple[Answer | None, Any], policy_b: tuple[Answer | None, Any]) -> Verdict:
    return Verdict(combine(policy_a[0], policy_b[0]), policy_a[0], policy_b[0], policy_a[1], policy_b[1])


def _short(value: Any, limit: int = 60) -> str:
    """A value fit for a one-line message: repr, cut at `limit` characters."""
    text = repr(value) if not isinstance(value, (int, float)) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(e: BaseException) -> str:
    """An exception as one line: an HTTP error's status and the message of its body, other errors' message with
    their cause when the message alone says little ("Connection error.")."""
    body = getattr(e, "body", None)
    if isinstance(e, openai.APIStatusError) and isinstance(body, dict) and isinstance(body.get("message"), str):
        return f"{e.status_code} {body['message'].strip().splitlines()[0] if body['message'].strip() else ''}"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({type(cause).__name__}: {str(cause).strip().splitlines()[0]})"
    return text


def _positive(field: str, value: Any, number: bool = False) -> None:
    """`value` is an int > 0 (a float too when `number`)."""
    kinds = (int, float) if number else (int,)
    if not isinstance(value, kinds) or isinstance(value, bool) or not value > 0:
        raise UsageError(f"{field}={_short(value)} is not positive; expected {'a number' if number else 'an int'} > 0")


# --------------------------------------------------------------------------------------------------
# a local Hugging Face causal LM as the judge


def check_causal_lm(path: str, trust_remote_code: bool = False) -> str:
    """`path` (eval.judge.path) names a causal LM: a local directory with a config.json, or a hub id this machine can
    load, whose architecture AutoModelForCausalLM builds. Returns what to load from; otherwise one line."""
    field = "eval.judge.path"
    if names_local_path(path) and not (Path(path).expanduser() / "config.json").is_file():
        raise UsageError(f"{field}={path} has no config.json; expected a Hugging Face causal LM directory or hub id")
    source = check_source(field, path)
    try:
        with quiet():
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UsageError(f"{field}={path} has an unreadable config ({_first_line(e)}); expected a Hugging Face "
                         "causal LM") from None  # fmt: skip
    if not _is_causal_lm(config, trust_remote_code):
        names = ", ".join(config.architectures or [type(config).__name__])
        raise UsageError(f"{field}={path} is not a causal LM ({names}); expected a model AutoModelForCausalLM loads, "
                         "e.g. LlamaForCausalLM")  # fmt: skip
    return source


def _is_causal_lm(config: Any, trust_remote_code: bool) -> bool:
    """The config's class has a causal-LM head in transformers, and the architectures the checkpoint was saved with
    (when listed) include that head, not e.g. BertForMaskedLM on a BertConfig."""
    if trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return True
    mapping = transformers.MODEL_FOR_CAUSAL_LM_MAPPING
    if type(config) not in mapping:
        return False
    saved = config.architectures or []
    head = mapping[type(config)].__name__
    return not saved or any(a == head or a.endswith(("ForCausalLM", "LMHeadModel")) for a in saved)


class HFJudge(PairwiseJudge):
    """A local causal LM choosing among "A", "B" and "tie" by log-probability after the filled template.

    With a chat template, the filled template is the user's message and the answer follows the generation prompt;
    without one, the answer follows the filled text after one space (none when it ends in whitespace). A candidate
    that is several tokens long scores the sum of its tokens' log-probs (the probability of the whole string).
    """

    def __init__(
        self,
        path: str,
        template: str = DEFAULT_TEMPLATE,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "auto",
        use_chat_template: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        self.template = check_template(template)
        _positive("eval.judge.batch_size", batch_size)
        source = check_causal_lm(path, trust_remote_code)
        self.identity = f"hf:{path}"
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer, self.model = _load(source, path, dtype, trust_remote_code)
        self.model.to(self.device)
        self.chat = use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def answer(self, queries: list[Query]) -> list[tuple[Answer | None, dict[str, float]]]:
        """The candidate with the highest log-prob (the first of A, B, tie on an exact tie) and all three."""
        rows = [(c, a) for c in (self.context(fill(self.template, q)) for q in queries) for a in ANSWERS]
        sequences = [self.encode(context, answer) for context, answer in rows]
        # batches of sequences of similar length (less padding to compute on); scores back in the rows' order
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
        scores = [0.0] * len(sequences)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, score in zip(chunk, self._score([sequences[i] for i in chunk])):
                scores[i] = score
        out = []
        for i in range(0, len(scores), len(ANSWERS)):
            logps = dict(zip(ANSWERS, scores[i : i + len(ANSWERS)]))
            out.append((max(ANSWERS, key=logps.__getitem__), logps))
        return out

    def context(self, filled: str) -> str:
        """The text the answer follows: the chat template's generation prompt for the filled template, or the
        filled template itself."""
        if not self.chat:
            return filled
        messages = [{"role": "user", "content": filled}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, context: str, answer: str) -> tuple[list[int], int]:
        """(token ids of context + answer, number of answer tokens). The answer is encoded apart from the context
        so the context's tokens are the same for the three candidates; the context gets the tokenizer's special
        tokens (BOS) unless a chat template already wrote them."""
        if not self.chat and not context[-1:].isspace():
            answer = " " + answer
        ctx = self.tokenizer(context, add_special_tokens=not self.chat)["input_ids"]
        ans = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        return ctx + ans, len(ans)

    @torch.inference_mode()
    def _score(self, batch: list[tuple[list[int], int]]) -> list[float]:
        """Sum of the answer tokens' log-probs per sequence, one forward over the left-padded batch."""
        width = max(len(ids) for ids, _ in batch)
        keep = max(n for _, n in batch)  # answer tokens are the last `n` of each row (left padding)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s, _ in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s, _ in batch], device=self.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": keep + 1} if self._keeps_logits else {}
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **kwargs).logits
        logps = torch.log_softmax(logits[:, -keep - 1 : -1].float(), -1)
        token = logps.gather(-1, ids[:, -keep:, None])[..., 0]  # [B, keep]
        lengths = torch.tensor([n for _, n in batch], device=self.device)
        is_answer = torch.arange(keep, device=self.device)[None, :] >= keep - lengths[:, None]
        return torch.where(is_answer, token, 0.0).sum(-1).tolist()


def _load(source: str, path: str, dtype: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """Tokenizer (a pad token: EOS when it has none) and frozen model; a failure is one line naming the path."""
    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        raise UsageError(f"eval.judge.path={path} cannot load as a causal LM ({_first_line(e)}); expected a "
                         "complete Hugging Face model directory or hub id") from None  # fmt: skip
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:  # neither: any id will do, padded positions are masked out
        tokenizer.pad_token_id = 0
    return tokenizer, model.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# the on-disk cache of single-order answers


class VerdictCache:
    """Single-order answers on disk, keyed by `key(...)`: `<directory>/verdicts.jsonl`, one JSON object a line,
    {"key": sha256 hex, "judge": identity, "answer": parsed, "raw": the reply text}. Append-only; each line is
    written with one `write` on an O_APPEND descriptor, then flushed and fsynced, so what was answered before a
    crash or a kill is there afterwards. A line a kill cut short is skipped on reading (and closed with a newline
    before the next append). The raw text is what counts: it is parsed again on reading."""

    FILE = "verdicts.jsonl"
    VERSION = 1  # part of every key: bump when what a key stands for changes

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / self.FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"judge cache directory {directory} cannot be created ({_first_line(e)}); expected a "
                             "writable directory") from None  # fmt: skip
        self._raw: dict[str, str] = {}
        self._lock = threading.Lock()
        self._load()

    @classmethod
    def key(cls, query: Query, identity: str, template: str) -> str:
        """sha256 of the JSON list (version, prompt, output A, output B, judge identity, template): unambiguous
        whatever the texts contain."""
        payload = [cls.VERSION, query.prompt, query.output_a, query.output_b, identity, template]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        """The raw reply cached under `key`, or None."""
        return self._raw.get(key)

    def put(self, key: str, raw: str, identity: str) -> None:
        """Appends one answer durably (flush + fsync) before returning."""
        line = json.dumps({"key": key, "judge": identity, "answer": parse_answer(raw), "raw": raw}) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                data = memoryview(line.encode())
                while data:  # one write in practice; the loop covers a short write
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            self._raw[key] = raw

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: str) -> bool:
        return key in self._raw

    def _load(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        for line in data.decode(errors="replace").splitlines():
            try:
                row = json.loads(line)
                if isinstance(row["raw"], str):
                    self._raw[row["key"]] = row["raw"]
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                continue
        if data and not data.endswith(b"\n"):  # the next append starts a line of its own
            with self.path.open("ab") as f:
                f.write(b"\n")


# --------------------------------------------------------------------------------------------------
# an OpenAI-compatible endpoint as the judge


def _retryable(e: Exception) -> bool:
    """Connection errors and timeouts, 408, 409, 429 and 5xx: what may pass on its own."""
    if isinstance(e, openai.APIConnectionError):  # APITimeoutError is one
        return True
    return isinstance(e, openai.APIStatusError) and (e.status_code in (408, 409, 429) or e.status_code >= 500)


def _retry_after(e: Exception) -> float:
    """Seconds a 429/503 response's Retry-After header asks for (0 when absent or not a number of seconds)."""
    response = getattr(e, "response", None)
    try:
        return max(0.0, float(response.headers.get("retry-after", 0))) if response is not None else 0.0
    except ValueError:  # an HTTP date: the exponential delay stands
        return 0.0


class _Stopped(Exception):
    """A request not sent (or not retried) because another one of the same evaluation failed for good."""


class _Failed(Exception):
    """A request that failed for good (after its retries): carries the last error and the attempts made."""

    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(_first_line(error))
        self.error, self.attempts = error, attempts


class Endpoint:
    """An OpenAI-compatible chat-completions endpoint: the client, retries with exponential backoff, the check.

    The client's own retries are off; a request is tried at most `1 + max_retries` times. Connection errors,
    timeouts (`timeout_s` per attempt), 408, 409, 429 and 5xx are retried after `backoff_s * 2**attempt` seconds
    (attempt 0, 1, ...), at least what a Retry-After header asks, at most `max_backoff_s`; other errors (400, 401,
    404...) are not. The API key is read from the environment variable named `api_key_env` (None: an endpoint that
    takes no key, e.g. a local vLLM server). Thread-safe: the judge's pool shares one.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_retries: int = 4,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,  # the backoff's clock (tests pass a recorder)
    ) -> None:
        if not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url):
            raise UsageError(f"eval.judge.base_url={_short(base_url)} is not an http(s) URL; expected e.g. "
                             "http://127.0.0.1:8000/v1")  # fmt: skip
        if not model or not isinstance(model, str):
            raise UsageError(f"eval.judge.model={_short(model)} is empty; expected the name the endpoint serves")
        _positive("eval.judge.timeout_s", timeout_s, number=True)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise UsageError(f"eval.judge.max_retries={_short(max_retries)} is not a count; expected an int >= 0")
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.identity = f"openai:{self.base_url}|{model}"
        self.max_retries, self.backoff_s, self.max_backoff_s, self._sleep = max_retries, backoff_s, max_backoff_s, sleep
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=_api_key(api_key_env), max_retries=0, timeout=timeout_s
        )

    def check(self) -> None:
        """One cheap request before any work: the endpoint answers, accepts the key and serves `model` (listed by
        GET /models, or, when it is not listed or there is no listing, a 1-token completion succeeds)."""
        try:
            listed = {m.id for m in self.with_retries(self.client.models.list).data}
        except _Failed as failed:
            if not (isinstance(failed.error, openai.APIStatusError) and failed.error.status_code in (404, 405, 501)):
                self._fail_check(failed)
            listed = set()  # an endpoint without a model listing
        if self.model in listed:
            return
        try:
            self.with_retries(lambda: self.chat("Answer with A.", max_tokens=1, temperature=None))
        except _Failed as failed:
            self._fail_check(failed, listed)

    def _fail_check(self, failed: _Failed, listed: set[str] | None = None) -> None:
        e = failed.error
        if isinstance(e, openai.APIStatusError) and e.status_code in (401, 403):
            raise UsageError(f"eval.judge.api_key_env={self.api_key_env} holds a key {self.base_url} refuses "
                             f"({_first_line(e)}); expected a key it accepts") from None  # fmt: skip
        if isinstance(e, openai.APIStatusError) and e.status_code in (400, 404, 422):
            served = f" (it lists {', '.join(sorted(listed))})" if listed else ""
            raise UsageError(f"eval.judge.model={self.model} is not served by {self.base_url} ({_first_line(e)}); "
                             f"expected a model the endpoint serves{served}") from None  # fmt: skip
        raise UsageError(f"eval.judge.base_url={self.base_url} is unreachable or failing after {_attempts(failed)} "
                         f"({type(e).__name__}: {_first_line(e)}); expected a running OpenAI-compatible "
                         "endpoint (e.g. http://host:port/v1)") from None  # fmt: skip

    def chat(self, content: str, max_tokens: int | None, temperature: float | None) -> str:
        """One attempt: the reply to `content` as the one user message ("" when the endpoint returned none)."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": content}]}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        response = self.client.chat.completions.create(**kwargs)
        return (response.choices[0].message.content or "") if response.choices else ""

    def with_retries(self, call: Callable[[], Any], stop: threading.Event | None = None) -> Any:
        """`call()`, retried on what may pass on its own; `_Failed` when it does not succeed, `_Stopped` when `stop`
        is set during a backoff (another request failed for good)."""
        for attempt in range(self.max_retries + 1):
            try:
                return call()
            except openai.APIError as e:
                if attempt == self.max_retries or not _retryable(e):
                    raise _Failed(e, attempt + 1) from e
                self._sleep(self.delay(attempt, e))
                if stop is not None and stop.is_set():
                    raise _Stopped from e
        raise AssertionError("unreachable")

    def delay(self, attempt: int, error: Exception | None = None) -> float:
        """Seconds to wait before retry `attempt + 1`: backoff_s * 2**attempt, at least the Retry-After the error's
        response asks for, at most max_backoff_s."""
        wanted = max(self.backoff_s * 2**attempt, _retry_after(error) if error is not None else 0.0)
        return min(self.max_backoff_s, wanted)


class OpenAIJudge(PairwiseJudge):
    """An OpenAI-compatible chat endpoint (`Endpoint`: retries, backoff, check) as the judge; the filled template
    is the one user message, the reply is parsed by `parse_answer`.

    Distinct queries not in the `VerdictCache` of `cache_dir` go to the endpoint from a thread pool of
    `max_concurrency` threads (so at most that many requests are in flight), and each answer is cached as it
    arrives. The first request that fails for good stops the rest (none is sent or retried after it; those in flight
    finish and are cached) and `judge` raises `JudgeError`. The endpoint's settings are `Endpoint`'s.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        cache_dir: str | Path,
        api_key_env: str | None = "OPENAI_API_KEY",
        template: str = DEFAULT_TEMPLATE,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_tokens: int | None = 16,
        temperature: float | None = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _positive("eval.judge.max_concurrency", max_concurrency)
        self.template = check_template(template)
        self.endpoint = Endpoint(base_url, model, api_key_env, max_retries, timeout_s, backoff_s, max_backoff_s, sleep)
        self.identity = self.endpoint.identity
        self.max_concurrency, self.max_tokens, self.temperature = max_concurrency, max_tokens, temperature
        self.cache = VerdictCache(cache_dir)
        self._stop = threading.Event()  # set when a request failed for good: the others are not sent or retried

    def check(self) -> None:
        """The endpoint answers, takes the key and serves the model (`Endpoint.check`): call it before any work."""
        self.endpoint.check()

    def answer(self, queries: list[Query]) -> list[tuple[Answer | None, str]]:
        """Each distinct query asked once: cached ones cost nothing, the rest go to the endpoint concurrently and
        are cached as they arrive."""
        keys = [VerdictCache.key(q, self.identity, self.template) for q in queries]
        missing = {k: q for k, q in zip(keys, queries) if k not in self.cache}
        self._ask_all(missing, total=len(set(keys)))
        return [(parse_answer(self.cache.get(k)), self.cache.get(k)) for k in keys]  # type: ignore[misc]

    def _ask_all(self, missing: dict[str, Query], total: int) -> None:
        failure: _Failed | None = None
        self._stop.clear()
        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="judge") as pool:
            futures = {pool.submit(self._ask, q): k for k, q in missing.items()}
            for future in as_completed(futures):
                try:
                    self.cache.put(futures[future], future.result(), self.identity)
                except _Stopped:
                    continue
                except _Failed as failed:
                    failure = failure or failed
        if failure is not None:
            done = total - sum(1 for k in missing if k not in self.cache)
            raise JudgeError(
                f"eval.judge.base_url={self.endpoint.base_url} failed for model {self.endpoint.model} after "
                f"{_attempts(failure)} ({type(failure.error).__name__}: {failure}); {done} of {total} verdicts "
                f"(single order) are cached in {self.cache.path.parent}: a rerun continues from them"
            )

    def _ask(self, query: Query) -> str:
        """The reply to one query. The first request that fails for good sets the stop flag in its own thread,
        before that thread takes the next query, so nothing is sent after it."""
        if self._stop.is_set():
            raise _Stopped
        content = fill(self.template, query)
        try:
            return self.endpoint.with_retries(lambda: self.endpoint.chat(content, self.max_tokens, self.temperature),
                                              self._stop)  # fmt: skip
        except _Failed:
            self._stop.set()
            raise


# --------------------------------------------------------------------------------------------------
# from a run's config (alignctl.config.schema.JudgeConfig, a layer above: read by attribute)


def check_config(cfg: Any) -> None:
    """eval.judge before any model trains or loads: the template, and for kind=hf the judge model's config (no
    weights load), for kind=openai the key variable and one request to the endpoint (`Endpoint.check`). One
    UsageError line for the first problem; kind=reward (the run's reward model) has nothing to check here."""
    if cfg.kind == "reward":
        return
    read_template(cfg.template)
    if cfg.kind == "hf":
        check_causal_lm(cfg.path)
    elif cfg.kind == "openai":
        Endpoint(cfg.base_url, cfg.model, cfg.api_key_env, cfg.max_retries, cfg.timeout_s).check()
    else:
        raise UsageError(f"eval.judge.kind={cfg.kind} is not a judge; expected reward, hf or openai")


def from_config(cfg: Any, cache_dir: str | Path, device: str | None = None) -> PairwiseJudge:
    """The judge eval.judge names (kind hf or openai); `cache_dir` holds the OpenAI judge's verdicts (alignctl passes
    <cache root>/judge_verdicts). The endpoint is not checked here: call `check()` (or `check_config`) first."""
    template = read_template(cfg.template)
    if cfg.kind == "hf":
        return HFJudge(cfg.path, template=template, batch_size=cfg.batch_size, device=device)
    if cfg.kind == "openai":
        return OpenAIJudge(cfg.base_url, cfg.model, cache_dir, api_key_env=cfg.api_key_env, template=template,
                           max_concurrency=cfg.max_concurrency, max_retries=cfg.max_retries,
                           timeout_s=cfg.timeout_s)  # fmt: skip
    raise UsageError(f"eval.judge.kind={cfg.kind} is not a pairwise judge; expected hf or openai")


def _attempts(failed: _Failed) -> str:
    return f"{failed.attempts} attempt{'s' if failed.attempts > 1 else ''}"


def _api_key(env: str | None) -> str:
    """The key from the variable named `env`; a placeholder when `env` is None (endpoints that take no key)."""
    if env is None:
        return "unused"
    value = os.environ.get(env)
    if not value:
        raise UsageError(f"eval.judge.api_key_env={env} names an environment variable that is "
                         f"{'empty' if value == '' else 'not set'}; expected the name of a variable holding the "
                         f"API key (export {env}=...)")  # fmt: skip
    return value
