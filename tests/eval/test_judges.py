"""alignctl.eval.judges: answer parsing, the two-order rule, the win rate by hand; OpenAIJudge against a real HTTP
server on 127.0.0.1 answering from a tiny model (tests/eval/judge_server.py), with injected faults; HFJudge against
log-probs computed here in plain torch. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import math
import random
import shutil
import socket
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, LlamaConfig, T5Config

from alignctl.data.tasks import tiny_lm
from alignctl.errors import UsageError
from alignctl.eval import judges as J
from alignctl.models import files
from alignctl.models.schema import TinyModelConfig
from tests.eval.judge_server import Fault, JudgeServer, answer_logprobs, choose

KEY_ENV, KEY = "ALIGNCTL_TEST_JUDGE_KEY", "sk-test-123"
WORDS = "the cat sat on a mat and the dog ran to sea blue sky four five kind great hello friend sleep well".split()
_rng = random.Random(0)
# (prompt, policy output, reference output)
ROWS = [(" ".join(_rng.choices(WORDS, k=4)), " ".join(_rng.choices(WORDS, k=_rng.randint(1, 6))),
         " ".join(_rng.choices(WORDS, k=_rng.randint(1, 6)))) for _ in range(12)]  # fmt: skip
PROMPTS, POLICY, REFERENCE = (list(c) for c in zip(*ROWS))
WEIGHT_SCALE = 20.0  # a fresh tiny model answers about the same whatever the texts; larger weights make it care


# --------------------------------------------------------------------------------------------------
# fixtures: one tiny judge model per session, one server per test


@pytest.fixture(scope="session")
def judge_dir(tmp_path_factory):
    """A tiny Llama (BPE tokenizer trained on filled templates) saved as an HF directory."""
    path = tmp_path_factory.mktemp("tiny-judge")
    texts = [J.fill(J.DEFAULT_TEMPLATE, J.Query(*row)) + " " + a for row in ROWS for a in ("A", "B", "tie")]
    tokenizer = tiny_lm.train_bpe_tokenizer(texts, vocab_size=400, model_max_length=512)
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=512)
    model = tiny_lm.build_llama(cfg, tokenizer)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.mul_(WEIGHT_SCALE)
    files.save_hf_dir(model, tokenizer, path)
    return path


@pytest.fixture(scope="session")
def tiny(judge_dir):
    """(model, tokenizer) loaded from the directory, as the server and the direct computations use them."""
    with files.quiet():
        return AutoModelForCausalLM.from_pretrained(judge_dir).eval(), AutoTokenizer.from_pretrained(judge_dir)


@pytest.fixture
def server(tiny, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with JudgeServer(*tiny, api_key=KEY) as s:
        yield s


@pytest.fixture(scope="session")
def direct(tiny):
    """Per row, the (policy as A, policy as B) log-probs of the three answers, straight from the model."""
    model, tokenizer = tiny
    out = []
    for prompt, policy, reference in ROWS:
        first = answer_logprobs(model, tokenizer, J.fill(J.DEFAULT_TEMPLATE, J.Query(prompt, policy, reference)))
        second = answer_logprobs(model, tokenizer, J.fill(J.DEFAULT_TEMPLATE, J.Query(prompt, reference, policy)))
        out.append((first, second))
    return out


def expected_winners(direct):
    return [J.combine(choose(a), choose(b)) for a, b in direct]


def openai_judge(server, cache_dir, **kwargs):
    settings = {"base_url": server.url, "model": server.model_name, "api_key_env": KEY_ENV, "cache_dir": cache_dir,
                "max_concurrency": 2, "max_retries": 2, "timeout_s": 10.0, "backoff_s": 0.001}  # fmt: skip
    return J.OpenAIJudge(**(settings | kwargs))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message and message
    return message


def cache_rows(cache_dir):
    return [json.loads(line) for line in (cache_dir / J.VerdictCache.FILE).read_text().splitlines()]


# --------------------------------------------------------------------------------------------------
# parsing, combining, win rate


@pytest.mark.parametrize(
    "text,expected",
    [
        ("A", "A"), ("B", "B"), ("tie", "tie"), ("Tie.", "tie"), (" B\n", "B"), ("a", "A"), ("(b)", "B"),
        ("**A**", "A"), ('"B".', "B"), ("Response A", "A"), ("Output (B)", "B"), ("Answer: B", "B"),
        ("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie"), ("My final verdict: [[B]]", "B"),
        ("Response B is better", "B"), ("Response A is better than response B.", "A"),
        ("A is clearly the better one", "A"), ("I prefer output B because it is shorter", "B"),
        ("The final verdict is tie", "tie"), ("It is a tie.", "tie"), ("Both are equally good", "tie"),
        ("The answer is A.", "A"), ("After reading both, B.", "B"),
        ("garbage", None), ("", None), ("   ", None), (None, None), ("hello world", None),
        ("The answer is a tie.", "tie"), ("I prefer a shorter answer, so B.", "B"), ("Verdict: response B", "B"),
        ("[[A]] or [[B]]", None), ("Both A and B are fine", None), ("a cat sat", None),
        ("I prefer a short reply", None),
    ],
)  # fmt: skip
def test_parse_answer(text, expected):
    assert J.parse_answer(text) == expected


def test_combine_truth_table():
    """Written out in full: policy_a is the answer with the policy shown as A, policy_b with it shown as B."""
    table = {
        ("A", "A"): "tie", ("A", "B"): "policy", ("A", "tie"): "tie",
        ("B", "A"): "reference", ("B", "B"): "tie", ("B", "tie"): "tie",
        ("tie", "A"): "tie", ("tie", "B"): "tie", ("tie", "tie"): "tie",
    }  # fmt: skip
    for (first, second), winner in table.items():
        assert J.combine(first, second) == winner, (first, second)
    for answer in (*J.ANSWERS, None):
        assert J.combine(None, answer) is None and J.combine(answer, None) is None


def verdicts_of(winners):
    return [J.Verdict(w, None, None, None, None) for w in winners]


def test_win_rate_by_hand():
    winners = ["policy", "policy", "reference", "tie", None, "policy", "tie", None]
    out = J.win_rate(verdicts_of(winners))
    # parseable: 1, 1, 0, 0.5, 1, 0.5 -> mean 4/6; deviations 1/3, 1/3, -2/3, -1/6, 1/3, -1/6
    mean = 4 / 6
    variance = (3 * (1 / 3) ** 2 + (2 / 3) ** 2 + 2 * (1 / 6) ** 2) / 5
    assert out["win_rate"] == pytest.approx(mean)
    assert out["stderr"] == pytest.approx(math.sqrt(variance / 6))
    assert (out["judged"], out["wins"], out["losses"], out["ties"], out["unparseable"]) == (6, 3, 1, 2, 2)
    assert J.outcomes(verdicts_of(winners)) == [1.0, 1.0, 0.0, 0.5, None, 1.0, 0.5, None]


def test_win_rate_with_nothing_or_one_parseable():
    assert J.win_rate(verdicts_of([None, None])) == {
        "win_rate": None, "stderr": None, "judged": 0, "wins": 0, "losses": 0, "ties": 0, "unparseable": 2}  # fmt: skip
    one = J.win_rate(verdicts_of(["reference"]))
    assert (one["win_rate"], one["stderr"], one["judged"]) == (0.0, None, 1)


def test_fill_and_template_check():
    template = "{prompt} | {output_a} | {output_b} | {{literal}}"
    assert J.fill(template, J.Query("p {output_b}", "x", "y")) == "p {output_b} | x | y | {{literal}}"
    with pytest.raises(UsageError, match=r"^eval\.judge\.template=.* lacks \{output_b\}; expected") as e:
        J.check_template("{prompt} {output_a}")
    one_line(e)


def test_cache_keys_name_every_part():
    q = J.Query("p", "a", "b")
    base = J.VerdictCache.key(q, "judge", "t")
    assert base == J.VerdictCache.key(J.Query("p", "a", "b"), "judge", "t")
    others = [J.VerdictCache.key(J.Query("p2", "a", "b"), "judge", "t"), J.VerdictCache.key(J.Query("p", "b", "a"),
              "judge", "t"), J.VerdictCache.key(q, "judge2", "t"), J.VerdictCache.key(q, "judge", "t2"),
              J.VerdictCache.key(J.Query("p", "a\", \"b", ""), "judge", "t")]  # fmt: skip
    assert len({base, *others}) == 6


def test_cache_reads_back_and_survives_a_line_cut_short(tmp_path, monkeypatch):
    synced = []
    real_fsync = J.os.fsync
    monkeypatch.setattr(J.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    cache = J.VerdictCache(tmp_path)
    cache.put("k1", "A", "judge")
    cache.put("k2", "Response B is better", "judge")
    assert len(synced) == 2  # each answer is on disk before put returns
    with (tmp_path / J.VerdictCache.FILE).open("a") as f:
        f.write('{"key": "k3", "raw": "ti')  # a kill mid-write
    again = J.VerdictCache(tmp_path)
    assert (len(again), again.get("k1"), again.get("k2"), again.get("k3")) == (2, "A", "Response B is better", None)
    again.put("k4", "tie", "judge")
    assert J.VerdictCache(tmp_path).get("k4") == "tie"
    lines = (tmp_path / J.VerdictCache.FILE).read_text().splitlines()
    assert json.loads(lines[1]) == {"key": "k2", "judge": "judge", "answer": "B", "raw": "Response B is better"}
    assert lines[2] == '{"key": "k3", "raw": "ti' and json.loads(lines[3])["key"] == "k4"  # closed, then appended


# --------------------------------------------------------------------------------------------------
# OpenAIJudge against the server


def test_openai_judge_matches_the_model_in_both_orders(server, direct, tmp_path):
    judge = openai_judge(server, tmp_path)
    judge.check()
    verdicts = judge.judge(PROMPTS, POLICY, REFERENCE)
    assert [(v.raw_policy_a, v.raw_policy_b) for v in verdicts] == [(choose(a), choose(b)) for a, b in direct]
    assert [v.winner for v in verdicts] == expected_winners(direct)
    assert {v.winner for v in verdicts} == {"policy", "reference", "tie"}  # the tiny model's verdicts vary
    # the server saw the filled default template, in both orders
    expected = {J.fill(J.DEFAULT_TEMPLATE, J.Query(p, x, y)) for p, a, b in ROWS for x, y in ((a, b), (b, a))}
    assert set(server.prompts) == expected and len(server.prompts) == 2 * len(ROWS)
    assert server.requests == {"models": 1, "chat": 2 * len(ROWS)}  # check() found the model listed
    assert judge.identity == f"openai:{server.url}|{server.model_name}"


def test_a_rerun_with_the_same_cache_asks_nothing(server, direct, tmp_path):
    first = openai_judge(server, tmp_path).judge(PROMPTS, POLICY, REFERENCE)
    assert server.requests["chat"] == 2 * len(ROWS)
    assert len(cache_rows(tmp_path)) == 2 * len(ROWS)
    server.reset_counts()
    second = openai_judge(server, tmp_path).judge(PROMPTS, POLICY, REFERENCE)
    assert server.requests["chat"] == 0 and second == first
    # another template is another question: asked again
    openai_judge(server, tmp_path, template="Q: {prompt}\nA: {output_a}\nB: {output_b}\nBetter:").judge(
        PROMPTS[:1], POLICY[:1], REFERENCE[:1]
    )
    assert server.requests["chat"] == 2


def test_repeated_pairs_are_asked_once(server, tmp_path):
    verdicts = openai_judge(server, tmp_path).judge(PROMPTS[:1] * 3, POLICY[:1] * 3, REFERENCE[:1] * 3)
    assert server.requests["chat"] == 2 and len(verdicts) == 3
    assert verdicts[0] == verdicts[1] == verdicts[2]


def test_retries_after_500s_and_a_429_with_backoff(server, direct, tmp_path):
    delays = []
    judge = openai_judge(server, tmp_path, max_concurrency=1, max_retries=3, backoff_s=0.001, sleep=delays.append)
    server.inject(Fault(status=500), Fault(status=503), Fault(status=429, headers={"Retry-After": "0.05"}))
    verdicts = judge.judge(PROMPTS, POLICY, REFERENCE)
    assert server.requests["chat"] == 2 * len(ROWS) + 3
    assert delays == pytest.approx([0.001, 0.002, 0.05])  # 2**attempt, then the Retry-After the 429 asked for
    assert [v.winner for v in verdicts] == expected_winners(direct)
    assert judge.endpoint.delay(30) == judge.endpoint.max_backoff_s


def test_timeouts_past_the_retries_stop_with_the_verdicts_so_far_cached(server, direct, tmp_path):
    judge = openai_judge(server, tmp_path, max_concurrency=1, max_retries=1, timeout_s=0.2)
    server.inject(*[Fault()] * 3, *[Fault(sleep_s=5.0)] * 2)  # 3 answers, then one request times out twice
    with pytest.raises(J.JudgeError) as e:
        judge.judge(PROMPTS, POLICY, REFERENCE)
    message = one_line(e)
    assert isinstance(e.value, UsageError)
    assert f"eval.judge.base_url={server.url}" in message and "APITimeoutError" in message
    assert f"3 of {2 * len(ROWS)} verdicts" in message and "rerun continues" in message
    assert server.requests["chat"] == 5
    assert len(cache_rows(tmp_path)) == 3  # on disk before the error
    server.reset_counts()
    verdicts = openai_judge(server, tmp_path).judge(PROMPTS, POLICY, REFERENCE)
    assert server.requests["chat"] == 2 * len(ROWS) - 3
    assert [v.winner for v in verdicts] == expected_winners(direct)


def test_an_error_that_cannot_pass_is_not_retried(server, tmp_path):
    delays = []
    judge = openai_judge(server, tmp_path, max_concurrency=1, sleep=delays.append)
    server.inject(Fault(status=400))
    with pytest.raises(J.JudgeError, match=r"after 1 attempt \(BadRequestError: 400 injected fault\)") as e:
        judge.judge(PROMPTS[:2], POLICY[:2], REFERENCE[:2])
    one_line(e)
    assert delays == [] and server.requests["chat"] == 1


def test_an_unparseable_answer_is_never_a_win(server, direct, tmp_path):
    judge = openai_judge(server, tmp_path, max_concurrency=1)
    server.inject(Fault(content="I cannot decide, sorry."))  # the first row, policy shown as A
    verdicts = judge.judge(PROMPTS, POLICY, REFERENCE)
    assert verdicts[0].winner is None and verdicts[0].policy_a is None
    assert verdicts[0].raw_policy_a == "I cannot decide, sorry."
    assert [v.winner for v in verdicts[1:]] == expected_winners(direct)[1:]
    counts = J.win_rate(verdicts)
    assert (counts["unparseable"], counts["judged"]) == (1, len(ROWS) - 1)
    scores = [J._OUTCOME[w] for w in expected_winners(direct)[1:]]
    assert counts["win_rate"] == pytest.approx(sum(scores) / len(scores))


@pytest.mark.parametrize("limit", [1, 3])
def test_max_concurrency_is_respected(server, tmp_path, limit):
    server.delay_s = 0.05  # requests overlap when the judge lets them
    openai_judge(server, tmp_path, max_concurrency=limit).judge(PROMPTS[:6], POLICY[:6], REFERENCE[:6])
    assert server.requests["chat"] == 12
    assert server.max_in_flight == limit


def test_check_fails_in_one_line_on_an_unreachable_endpoint(server, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    delays = []
    judge = openai_judge(server, tmp_path, base_url=url, max_retries=2, sleep=delays.append)
    with pytest.raises(UsageError, match=rf"^eval\.judge\.base_url={url} is unreachable.* after 3 attempts") as e:
        judge.check()
    assert "expected a running OpenAI-compatible endpoint" in one_line(e)
    assert len(delays) == 2


def test_check_fails_in_one_line_on_a_model_not_served(server, tmp_path):
    judge = openai_judge(server, tmp_path, model="gpt-nope")
    with pytest.raises(UsageError, match=r"^eval\.judge\.model=gpt-nope is not served by .*404.*it lists tiny-judge\)") as e:
        judge.check()
    assert "The model `gpt-nope` does not exist" in one_line(e)
    assert server.requests["chat"] == 1  # the 1-token probe, then nothing


def test_check_fails_in_one_line_on_a_key_refused(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(UsageError, match=rf"^eval\.judge\.api_key_env={KEY_ENV} holds a key .* refuses \(401 Incorrect API key") as e:
        openai_judge(server, tmp_path).check()
    assert "sk-wrong" not in one_line(e)  # a key is never printed


def test_a_missing_key_variable_fails_at_construction(server, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(UsageError, match=rf"^eval\.judge\.api_key_env={KEY_ENV} names .* not set; expected") as e:
        openai_judge(server, tmp_path)
    one_line(e)
    assert server.requests == {}


@pytest.mark.parametrize(
    "setting,match",
    [({"base_url": "127.0.0.1:8000"}, r"eval\.judge\.base_url='127.0.0.1:8000' is not an http"),
     ({"max_concurrency": 0}, r"eval\.judge\.max_concurrency=0 is not positive"),
     ({"timeout_s": -1}, r"eval\.judge\.timeout_s=-1 is not positive"),
     ({"max_retries": -1}, r"eval\.judge\.max_retries=-1 is not a count"),
     ({"template": "{prompt} {output_a}"}, r"eval\.judge\.template=.* lacks \{output_b\}")],
)  # fmt: skip
def test_bad_settings_fail_at_construction(server, tmp_path, setting, match):
    with pytest.raises(UsageError, match=match) as e:
        openai_judge(server, tmp_path, **setting)
    one_line(e)


def test_mismatched_lists_are_refused(server, tmp_path):
    with pytest.raises(ValueError, match="2 prompts, 1 policy outputs"):
        openai_judge(server, tmp_path).judge(PROMPTS[:2], POLICY[:1], REFERENCE[:2])


# --------------------------------------------------------------------------------------------------
# HFJudge


def test_hf_judge_matches_plain_torch_log_probs(judge_dir, direct):
    judge = J.HFJudge(str(judge_dir), batch_size=4, device="cpu")  # 4 rows a batch: queries split across batches
    verdicts = judge.judge(PROMPTS, POLICY, REFERENCE)
    for v, (first, second) in zip(verdicts, direct):
        for got, want in ((v.raw_policy_a, first), (v.raw_policy_b, second)):
            assert got.keys() == want.keys()
            assert [got[a] for a in J.ANSWERS] == pytest.approx([want[a] for a in J.ANSWERS], abs=1e-4)
        assert (v.policy_a, v.policy_b) == (choose(first), choose(second))
    assert [v.winner for v in verdicts] == expected_winners(direct)
    assert judge.identity == f"hf:{judge_dir}"


def test_hf_judge_left_padding_does_not_change_a_score(judge_dir):
    """The same query alone and beside a much longer one (so it is padded) scores the same."""
    judge = J.HFJudge(str(judge_dir), batch_size=8, device="cpu")
    short = J.Query("cat", "a", "b")
    alone = judge.answer([short])[0][1]
    padded = judge.answer([short, J.Query(" ".join(WORDS * 3), "x", "y")])[0][1]
    assert [padded[a] for a in J.ANSWERS] == pytest.approx([alone[a] for a in J.ANSWERS], abs=1e-4)


def test_hf_judge_refuses_what_is_not_a_causal_lm(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=rf"^eval\.judge\.path={empty} has no config\.json; expected") as e:
        J.HFJudge(str(empty))
    one_line(e)
    for name, config in [("bert", BertConfig(architectures=["BertForMaskedLM"])), ("t5", T5Config())]:
        config.save_pretrained(tmp_path / name)
        with pytest.raises(UsageError, match=rf"^eval\.judge\.path={tmp_path / name} is not a causal LM .*; expected"):
            J.HFJudge(str(tmp_path / name))
    LlamaConfig(architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path / "llama-no-weights")
    with pytest.raises(UsageError, match=r"^eval\.judge\.path=.*llama-no-weights cannot load as a causal LM") as e:
        J.HFJudge(str(tmp_path / "llama-no-weights"))
    one_line(e)


def test_hf_judge_checks_its_settings(judge_dir):
    with pytest.raises(UsageError, match=r"^eval\.judge\.batch_size=0 is not positive"):
        J.HFJudge(str(judge_dir), batch_size=0)
    with pytest.raises(UsageError, match=r"^eval\.judge\.template=.* lacks \{prompt\}"):
        J.HFJudge(str(judge_dir), template="{output_a} {output_b}")


# --------------------------------------------------------------------------------------------------
# from a run's config (eval.judge)


def judge_config(**fields):
    """The fields of alignctl.config.schema.JudgeConfig, with its defaults."""
    defaults = {"kind": "reward", "path": None, "base_url": None, "model": None, "api_key_env": "OPENAI_API_KEY",
                "template": None, "batch_size": 8, "max_concurrency": 8, "max_retries": 4, "timeout_s": 60.0}  # fmt: skip
    return SimpleNamespace(**(defaults | fields))


def test_read_template(tmp_path):
    assert J.read_template(None) == J.DEFAULT_TEMPLATE
    text = "Q: {prompt}\nA: {output_a}\nB: {output_b}\nBetter:"
    (tmp_path / "judge.txt").write_text(text)
    assert J.read_template(str(tmp_path / "judge.txt")) == text
    assert J.read_template(text) == text
    with pytest.raises(UsageError, match=r"^eval\.judge\.template=.*missing\.txt is not a readable file") as e:
        J.read_template(str(tmp_path / "missing.txt"))
    one_line(e)
    (tmp_path / "bad.txt").write_text("{prompt} only")
    with pytest.raises(UsageError, match=r"lacks \{output_a\}, \{output_b\}"):
        J.read_template(str(tmp_path / "bad.txt"))


def test_check_config_checks_the_judge_before_anything_loads(server, judge_dir, tmp_path, monkeypatch):
    J.check_config(judge_config())  # reward: nothing to check
    J.check_config(judge_config(kind="hf", path=str(judge_dir)))
    monkeypatch.setattr(J.AutoModelForCausalLM, "from_pretrained", None)  # no weights load in a check
    with pytest.raises(UsageError, match=r"^eval\.judge\.path=.* has no config\.json"):
        J.check_config(judge_config(kind="hf", path=str(tmp_path)))
    with pytest.raises(UsageError, match=r"^eval\.judge\.template="):
        J.check_config(judge_config(kind="hf", path=str(judge_dir), template="{prompt}"))
    openai_cfg = judge_config(kind="openai", base_url=server.url, model=server.model_name, api_key_env=KEY_ENV)
    J.check_config(openai_cfg)
    assert server.requests == {"models": 1}
    with pytest.raises(UsageError, match=r"^eval\.judge\.model=gpt-nope is not served"):
        J.check_config(judge_config(**vars(openai_cfg) | {"model": "gpt-nope"}))


def test_from_config_builds_the_judge_named(server, judge_dir, tmp_path):
    hf = J.from_config(judge_config(kind="hf", path=str(judge_dir), batch_size=3), tmp_path, device="cpu")
    assert isinstance(hf, J.HFJudge) and hf.batch_size == 3 and hf.template == J.DEFAULT_TEMPLATE
    cfg = judge_config(kind="openai", base_url=server.url, model=server.model_name, api_key_env=KEY_ENV,
                       template="{prompt}|{output_a}|{output_b}", max_concurrency=3, max_retries=1, timeout_s=5.0)  # fmt: skip
    judge = J.from_config(cfg, tmp_path / "judge_verdicts", device="cpu")
    assert isinstance(judge, J.OpenAIJudge) and judge.identity == f"openai:{server.url}|{server.model_name}"
    assert (judge.max_concurrency, judge.endpoint.max_retries, judge.template) == (3, 1, cfg.template)
    assert judge.cache.path == tmp_path / "judge_verdicts" / J.VerdictCache.FILE
    with pytest.raises(UsageError, match=r"^eval\.judge\.kind=reward is not a pairwise judge"):
        J.from_config(judge_config(), tmp_path)


CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"


def test_hf_judge_asks_through_the_chat_template_when_the_tokenizer_has_one(judge_dir, tiny, tmp_path):
    """A judge whose tokenizer has a chat template gets the filled prompt as one user message, rendered by the
    template (which writes its own special tokens: none added), and the answer right after the assistant header;
    use_chat_template=false asks the plain filled prompt as before."""
    chat_dir = tmp_path / "chat-judge"
    shutil.copytree(judge_dir, chat_dir)
    tokenizer = AutoTokenizer.from_pretrained(chat_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(chat_dir)
    model = tiny[0]
    query = J.Query(*ROWS[0])
    rendered = f"<|user|>\n{J.fill(J.DEFAULT_TEMPLATE, query)}\n<|assistant|>"  # Jinja drops the final newline
    context = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    want = {}
    for answer in J.ANSWERS:
        tail = tokenizer(answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=torch.tensor([context + tail])).logits[0].double(), -1)
        want[answer] = sum(logps[len(context) - 1 + j, t].item() for j, t in enumerate(tail))
    judge = J.HFJudge(str(chat_dir), device="cpu")
    assert judge.chat and judge.context(J.fill(J.DEFAULT_TEMPLATE, query)) == rendered
    got = judge.answer([query])[0][1]
    assert [got[a] for a in J.ANSWERS] == pytest.approx([want[a] for a in J.ANSWERS], abs=1e-4)
    plain = J.HFJudge(str(chat_dir), device="cpu", use_chat_template=False)
    assert not plain.chat
    got_plain = plain.answer([query])[0][1]
    want_plain = answer_logprobs(model, tokenizer, J.fill(J.DEFAULT_TEMPLATE, query))
    assert [got_plain[a] for a in J.ANSWERS] == pytest.approx([want_plain[a] for a in J.ANSWERS], abs=1e-4)
