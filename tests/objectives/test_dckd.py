"""dckd: SFT(y_w)/|y_w| + kd_weight (K_w/|y_w| + K_l/|y_l|), K = sum_t KL(teacher || student); hand derivations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.objectives import dckd
from alignctl.run import sources

from ._helpers import DIV_IDS, DIVERGENCES, assert_finite, div, extreme_pairs, grads, np_, random_pairs
from ._token import random_logits, token_batch


def test_value_gradient_and_rewards():
    kd, sft = 0.3, 0.7
    logps, leaves = random_pairs(seed=71, seq_kl=True)
    out = dckd.loss(logps, divergence=div("forward_kl"), kd_weight=kd, sft_weight=sft)
    n_w, n_l = logps.chosen_lengths.double().numpy(), logps.rejected_lengths.double().numpy()
    l_w, l_l = np_(leaves["policy_chosen_logps"]), np_(leaves["policy_rejected_logps"])
    k_w, k_l = np_(leaves["chosen_seq_kl"]), np_(leaves["rejected_seq_kl"])
    np.testing.assert_allclose(np_(out.losses), -sft * l_w / n_w + kd * (k_w / n_w + k_l / n_l), rtol=1e-12)
    g = grads(out.losses, leaves)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -sft / n_w, rtol=1e-12)
    assert g["policy_rejected_logps"] is None or g["policy_rejected_logps"].abs().max() == 0
    np.testing.assert_allclose(np_(g["chosen_seq_kl"]), kd / n_w, rtol=1e-12)
    np.testing.assert_allclose(np_(g["rejected_seq_kl"]), kd / n_l, rtol=1e-12)
    assert g["ref_chosen_logps"] is None and g["ref_rejected_logps"] is None  # the teacher's log-probs are not read
    np.testing.assert_allclose(np_(out.chosen_rewards), l_w / n_w, rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), l_l / n_l, rtol=1e-12)


def _explicit_forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> np.ndarray:
    """Per-sequence sum over positions of sum_a q(a) log(q(a)/p(a)), q = teacher, in explicit float64 loops."""
    q_all, p_all = np_(teacher_logits.softmax(-1)), np_(student_logits.softmax(-1))
    batch, length, vocab = q_all.shape
    out = np.zeros(batch)
    for b in range(batch):
        for t in range(length):
            out[b] += sum(q_all[b, t, a] * np.log(q_all[b, t, a] / p_all[b, t, a]) for a in range(vocab))
    return out


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_zero_when_student_equals_teacher(name, alpha):
    """Spec 11's sanity check: pi_S = pi_T gives a zero distillation term with zero gradient (its minimum)."""
    d = div(name, alpha)
    (lw, tw), (ll, tl) = random_logits(11), random_logits(12)
    stu_w, stu_l = lw.clone().requires_grad_(), ll.clone().requires_grad_()
    out = dckd.loss(token_batch(stu_w, stu_l, lw, ll, tw, tl, d), divergence=d, kd_weight=1.0, sft_weight=0.0)
    torch.testing.assert_close(out.losses, torch.zeros_like(out.losses), rtol=0, atol=1e-12)
    for g in torch.autograd.grad(out.losses.sum(), [stu_w, stu_l]):
        assert g.abs().max() < 1e-12


def test_distillation_term_away_from_teacher_matches_explicit_kl():
    """The test above could pass with a loss that ignores K: away from the teacher the term is the token-mean
    forward KL (explicit loops) and it pulls the student towards the teacher."""
    d = div("forward_kl")
    (lw, tw), (ll, tl) = random_logits(13), random_logits(14)
    stu_w = (lw + random_logits(15)[0]).requires_grad_()
    stu_l = (ll + random_logits(16)[0]).requires_grad_()
    out = dckd.loss(token_batch(stu_w, stu_l, lw, ll, tw, tl, d), divergence=d, kd_weight=1.0, sft_weight=0.0)
    length = tw.shape[1]
    expected = (_explicit_forward_kl(lw, stu_w) + _explicit_forward_kl(ll, stu_l)) / length
    np.testing.assert_allclose(np_(out.losses), expected, rtol=1e-10)
    g_w = torch.autograd.grad(out.losses.sum(), stu_w)[0]
    # d KL(q || softmax(z)) / dz = (p - q) / |y| per position: explicit gradient of the forward KL
    np.testing.assert_allclose(np_(g_w), np_((stu_w.softmax(-1) - lw.softmax(-1)) / length), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_extremes_stay_finite(dtype):
    logps, leaves = extreme_pairs(dtype, seq_kl=True)
    assert_finite(dckd.loss(logps, divergence=None), leaves)


def test_needs_the_divergence_terms():
    logps, _ = random_pairs(seed=1)
    with pytest.raises(ValueError, match="chosen_seq_kl"):
        dckd.loss(logps, divergence=None)


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "dckd", defaults={"kd_weight": 0.1, "sft_weight": 1.0}, data="pairs", needs_reference=True,
        divergences={"forward_kl", "reverse_kl", "js", "alpha"}, default_divergence="forward_kl",
    )  # fmt: skip


# --- objective.teacher / objective.teacher_reference: checked when the run is validated -----------------------
@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Two tiny HF model dirs with one tokenizer, and a third with another vocabulary."""
    from alignctl.data.tasks import tiny_lm
    from alignctl.models import files
    from alignctl.models.schema import TinyModelConfig

    root = tmp_path_factory.mktemp("teachers")
    texts = ["the film was a quiet delight.", "a dull plot and wooden acting."] * 4
    dirs = {}
    for name, vocab in (("student", 270), ("teacher", 270), ("foreign", 262)):
        tokenizer = tiny_lm.train_bpe_tokenizer(texts if vocab == 270 else texts[:1], vocab, model_max_length=64)
        cfg = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                              max_position_embeddings=64)  # fmt: skip
        files.save_hf_dir(tiny_lm.build_llama(cfg, tokenizer), tokenizer, root / name)
        dirs[name] = root / name
    return dirs


def _compose(*overrides):
    """The run's validation (alignctl train's): the config's rules, then the teachers (alignctl.run.sources)."""
    from alignctl.run import launch

    return launch.validate(["tracking=none", *overrides], multirun=False)[0]


def test_teacher_is_required_and_checked():
    from alignctl.errors import UsageError

    with pytest.raises(UsageError, match=r"objective=dckd needs objective.teacher="):
        _compose("objective=dckd")
    with pytest.raises(UsageError, match=r"objective.teacher=/no/such/dir is not a Hugging Face model directory"):
        _compose("objective=dckd", "objective.teacher=/no/such/dir")


def test_teacher_run_dir_and_its_reference(hf_dirs, tmp_path):
    from alignctl.config import compose
    from alignctl.config import schema as config
    from alignctl.errors import UsageError

    student = ("model=hf", f"model.path={hf_dirs['student']}")
    cfg = _compose("objective=dckd", f"objective.teacher={hf_dirs['teacher']}", *student)
    assert sources.teacher_sources(cfg) == (str(hf_dirs["teacher"]), None)
    assert config.hyperparameters(cfg.objective) == {"kd_weight": 0.1, "sft_weight": 1.0}  # paths are not loss args
    # a DPO run of the teacher: <run>/model is the teacher, the run's own reference (its starting model) pi_ref
    run = tmp_path / "teacher-run"
    (run / "model").mkdir(parents=True)
    compose.save_resolved(_compose("objective=dpo", "model=hf", f"model.path={hf_dirs['foreign']}"), run)
    with pytest.raises(UsageError, match="without a trained model"):
        _compose("objective=adpa", f"objective.teacher={run}", *student)
    for f in hf_dirs["teacher"].iterdir():
        (run / "model" / f.name).write_bytes(f.read_bytes())
    cfg = _compose("objective=adpa", f"objective.teacher={run}", *student)
    assert sources.teacher_sources(cfg) == (str(run / "model"), str(hf_dirs["foreign"]))
    assert config.hyperparameters(cfg.objective) == {"beta": 1.6, "sft_weight": 1.0}
    cfg = _compose("objective=adpa", f"objective.teacher={run}", f"objective.teacher_reference={run}", *student)
    assert sources.teacher_sources(cfg) == (str(run / "model"), str(run / "model"))
    with pytest.raises(UsageError, match="is a model dir, not a run dir"):
        _compose("objective=adpa", f"objective.teacher={hf_dirs['teacher']}", *student)


def test_teacher_must_share_the_students_vocabulary(hf_dirs):
    from transformers import AutoModelForCausalLM

    from alignctl.errors import UsageError
    from alignctl.models import loading

    student = AutoModelForCausalLM.from_pretrained(hf_dirs["student"])
    for name in ("teacher", "foreign"):
        teacher = AutoModelForCausalLM.from_pretrained(hf_dirs[name])
        check = lambda: loading.check_same_vocabulary(  # noqa: E731
            "objective.teacher", teacher, str(hf_dirs[name]), student, str(hf_dirs["student"]))
        if name == "teacher":
            check()
        else:
            with pytest.raises(UsageError, match=r"objective.teacher=.*another tokenizer than the policy"):
                check()
