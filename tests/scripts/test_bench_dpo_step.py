"""scripts/bench_dpo_step.py's KTO and ORPO cases at tiny sizes (its DPO case: tests/trainers/test_bench_dpo_step.py):
both run side by side with TRL's KTOTrainer and ORPOTrainer, alignctl's loss terms equal TRL's on the same batch
(KTO: loss and reference point z0; ORPO: the whole loss with a one-token prompt, else the odds-ratio term while the
NLL conventions differ), one JSON per objective, and a summary table whose cells parse. No time is asserted."""

import json

from ._tiny import load_script, number, table_after

TINY = ["--n-layer", "1", "--n-embd", "64", "--vocab", "512", "--rounds", "1", "--pairs", "2", "--completion-len", "8",
        "--threads", "1", "--no-memory"]  # fmt: skip
SUMMARY = ["objective", "alignctl", "s", "trl", "s", "x", "time", "x", "round", "alignctl", "MiB", "trl", "MiB", "x",
           "mem", "loss", "load"]  # fmt: skip


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


def test_kto_and_orpo_match_trl_with_a_one_token_prompt(tmp_path, capsys):
    bench = load_script("bench_dpo_step")
    # lr 1e-2: one step moves the policy far enough that the loss after it is no longer the warm-up's and KTO's z0 is
    # positive (not clamped to 0), so the comparisons below can fail
    results = bench.main([*TINY, "--objective", "kto,orpo", "--prompt-len", "1", "--lr", "1e-2",
                          "--out", str(tmp_path / "{objective}.json")])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert set(results) == {"kto", "orpo"}
    for objective, result in results.items():
        assert json.loads((tmp_path / f"{objective}.json").read_text()) == json.loads(json.dumps(result))
        assert result["objective"] == objective and set(result["trainers"]) == {"alignctl", "trl"}
        assert (result["rows"], result["tokens"]) == (4, 9)  # 2 pairs; 1 prompt + 8 completion tokens
        assert result["grads_comparable"] and result["grad_rel_diff"] < 1e-4
        assert result["same_loss"] and result["loss_rel_diff"] <= 1e-4
        for phase in ("warmup", "after_step"):
            a, t = result["terms"][phase]["alignctl"], result["terms"][phase]["trl"]
            assert set(a) == set(t) and all(close(a[k], t[k]) for k in a), (objective, phase, a, t)
        moved, start = result["terms"]["after_step"]["trl"], result["terms"]["warmup"]["trl"]
        assert abs(moved["loss"] - start["loss"]) > 1e-2

    kto = results["kto"]
    assert kto["compared_terms"] == ["loss", "kl"]
    assert kto["terms"]["warmup"]["trl"] == {"loss": 0.5, "kl": 0.0}  # policy = reference: h = z0 = 0
    assert kto["terms"]["after_step"]["trl"]["kl"] > 0.01  # the reference point is in play
    orpo = results["orpo"]
    assert orpo["compared_terms"] == ["loss", "nll", "ratio"]
    for phase in ("warmup", "after_step"):
        t = orpo["terms"][phase]["trl"]
        assert t["nll"] > 1.0 and t["ratio"] > 1e-3 and close(t["loss"], t["nll"] + t["ratio"])

    header, table = table_after(lines, "objective ", 2)
    assert header == SUMMARY and [row[0] for row in table] == ["kto", "orpo"]
    for row in table:
        assert len(row) == 10 and row[8] == "same"
        # median seconds (0.00 at these sizes) and their ratios parse; no memory figures (--no-memory)
        assert all(number(c) >= 0 for c in row[1:5])


def test_orpo_compares_the_odds_ratio_term_while_the_nll_conventions_differ(tmp_path):
    bench = load_script("bench_dpo_step")
    out = tmp_path / "orpo.json"
    result = bench.main([*TINY, "--objective", "orpo", "--prompt-len", "4", "--lr", "1e-2", "--out", str(out)])
    assert json.loads(out.read_text())["terms"] == result["terms"]
    assert result["compared_terms"] == ["ratio"] and not result["grads_comparable"] and result["same_loss"]
    for phase in ("warmup", "after_step"):
        a, t = result["terms"][phase]["alignctl"], result["terms"][phase]["trl"]
        assert close(a["ratio"], t["ratio"]) and a["ratio"] > 1e-3
        # TRL pools its NLL over the prompt tokens too: alignctl's completion-only NLL is another number
        assert abs(a["nll"] - t["nll"]) > 1e-3
