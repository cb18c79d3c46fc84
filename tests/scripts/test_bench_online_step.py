"""scripts/bench_online_step.py at tiny sizes: one GRPO step of alignctl's OnlineTrainer and TRL's GRPOTrainer side
by side, timed per part; the printed table, the JSON and the target line have their shape and finite ratios. No time
is asserted."""

import json
import math

from ._tiny import load_script, number, table_after

TINY = ["--vocab", "256", "--hidden", "32", "--layers", "1", "--heads", "2", "--prompts", "2", "--num-generations", "2",
        "--prompt-len", "4", "--completion-len", "4", "--rounds", "2", "--threads", "1"]  # fmt: skip
HEADER = ["trainer", "generation", "sampler", "rest", "scoring", "loss", "bwd+opt", "total"]
PARTS = ["generation", "sampler", "rest", "scoring", "loss", "backward_optimizer", "total"]


def test_online_step_prints_and_writes_the_split_and_the_ratios(tmp_path, capsys):
    from alignctl.models.row_seeded import RowSeededSampler

    sampler_call = RowSeededSampler.__call__
    bench = load_script("bench_online_step")
    out = tmp_path / "online_step.json"
    result = bench.main([*TINY, "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert RowSeededSampler.__call__ is sampler_call  # the timing wrapper is gone

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert (result["vocab"], result["prompts"], result["num_generations"], result["rounds"]) == (256, 2, 2, 2)
    assert result["divergence"] == "reverse_kl" and result["beta"] == 0.01
    for name in ("alignctl", "trl"):
        trainer = result["trainers"][name]
        assert set(trainer["median"]) == set(PARTS) and len(trainer["rounds"]) == 2
        assert all(math.isfinite(v) and v >= 0 for v in trainer["median"].values())
        assert 0 < trainer["mean_completion_length"] <= 4
        for r in trainer["rounds"]:
            assert math.isclose(r["generation"] + r["rest"], r["total"], rel_tol=1e-9)
            assert math.isclose(r["scoring"] + r["loss"] + r["backward_optimizer"], r["rest"], rel_tol=1e-9)
    assert result["trainers"]["alignctl"]["median"]["sampler"] > 0  # the row-seeded sampler drew the completions
    assert result["trainers"]["trl"]["median"]["sampler"] == 0  # and only alignctl's
    assert set(result["ratios"]) == set(PARTS) - {"sampler"}
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
    assert len(result["per_round_total_ratios"]) == 2
    target = result["targets"]["total"]
    assert target["max_ratio"] == 1.0 and target["met"] == (target["ratio"] <= 1.0)

    header, table = table_after(lines, "trainer ", 3)
    assert header == HEADER and [row[0] for row in table] == ["alignctl", "trl", "ratio"]
    assert all(number(c) >= 0 for c in table[0][1:])
    assert table[1][2] == "-" and all(number(c) >= 0 for c in table[1][1:2] + table[1][3:])
    assert table[2][2] == "-" and all(number(c) > 0 for c in table[2][1:2] + table[2][3:8])
    [verdict] = [line for line in lines if line.startswith("target: total step time <= 1.0 x trl")]
    assert verdict.split(": ")[2].split()[0] in ("met", "NOT")


def test_divergence_none_runs_without_a_reference_model(tmp_path):
    bench = load_script("bench_online_step")
    result = bench.main([*TINY, "--rounds", "1", "--divergence", "none", "--arch", "gpt2", "--out",
                         str(tmp_path / "o.json")])  # fmt: skip
    assert result["beta"] == 0.0 and result["arch"] == "gpt2"
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
