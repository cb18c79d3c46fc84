"""SALSA's reference: a model soup, the uniform weight average of several SFT models, built once and cached.

Paper: Chegini et al., "SALSA: Soup-based Alignment Learning for Stronger Adaptation in RLHF", arXiv 2411.01798
(2024): RLHF whose KL anchor is theta_ref = (1/n) sum_i theta_SFT,i (two SFT runs that differ only in their seed;
mergekit's "linear" merge with equal weights), which the paper reports reaches higher reward at equal KL. Here the
soup is the run's starting policy as well as its reference (`model.reference=soup model.soup=[a, b]`): the paper
starts the policy from the soup too, and online objectives anchor to their starting weights anyway.

Entries (`model.soup`): model directories, run directories (their `model/`), hub ids in the local cache, or, with
`model=tiny`, an integer k = the embedded task's base model built with `model.seed=k` (pretrained from its own random
initialisation: unlike SALSA's SFT runs of one pretrained model, such models share no loss basin and their average
is a poor LM; use them to exercise the plumbing, fine-tunes of one base for a meaningful soup). They must share one
architecture (model type, parameter names and shapes) and one tokenizer vocabulary; the soup keeps the first
entry's config, generation config and tokenizer. The average is taken in float64 and rounded once to each tensor's
dtype, so a soup of identical models is that model bit for bit. The soup directory is cached
(alignctl.cache) by a recipe holding each entry's content fingerprint (config, tokenizer and weight bytes), so
an entry retrained in place is never a stale hit; like every cache build it happens before the ranks of a
multi-process run start (alignctl.run.train.build_inputs).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from alignctl.cache import cached, write_info
from alignctl.errors import UsageError
from alignctl.lazy import torch  # the run's validation imports this module (alignctl.run.sources)
from alignctl.models import files

KIND = "model_soup"
console = Console(stderr=True)


class Mismatch(ValueError):
    """State dict `index` does not fit the first one (`detail` says how)."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(f"state dict {index} {detail}")
        self.index, self.detail = index, detail


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts with the same names and shapes, each tensor in the first one's dtype
    (summed in float64, divided, then rounded once). Mismatch for the first state dict whose names or shapes differ
    from the first one's."""
    if len(state_dicts) < 1:
        raise ValueError("a soup needs at least one state dict")
    first = state_dicts[0]
    for index, other in enumerate(state_dicts[1:], start=1):
        missing, extra = sorted(first.keys() - other.keys()), sorted(other.keys() - first.keys())
        if missing or extra:
            raise Mismatch(index, f"{'lacks' if missing else 'has an extra'} parameter {(missing or extra)[0]}")
        for name, tensor in first.items():
            if other[name].shape != tensor.shape:
                raise Mismatch(index, f"has parameter {name} of shape {list(other[name].shape)}, not "
                                      f"{list(tensor.shape)}")  # fmt: skip
    averaged = {}
    for name, tensor in first.items():
        total = torch.zeros(tensor.shape, dtype=torch.float64)
        for state in state_dicts:
            total += state[name].detach().to("cpu", torch.float64)
        averaged[name] = (total / len(state_dicts)).to(tensor.dtype)
    return averaged


def recipe(sources: Sequence[str]) -> dict[str, Any]:
    """What determines the soup: the merge method and each entry's content fingerprint, in order (the first entry
    gives the config and tokenizer)."""
    return {"method": "linear", "entries": [files.model_fingerprint(source) for source in sources]}


def build(sources: Sequence[str], trust_remote_code: bool = False) -> Path:
    """The soup of the models at `sources`: a cached HF model directory (built on first use)."""
    built: list[float] = []

    def make(out: Path) -> None:
        start = time.perf_counter()
        write_soup(sources, out, trust_remote_code=trust_remote_code)
        built.append(time.perf_counter() - start)

    path = cached(KIND, recipe(sources), make)
    if built:
        console.print(f"model soup of {len(sources)} models built in {built[0]:.0f}s -> {path}", soft_wrap=True,
                      highlight=False, markup=False)  # fmt: skip
    return path


def write_soup(sources: Sequence[str], out: Path, trust_remote_code: bool = False) -> None:
    """Average the models at `sources` (same architecture and vocabulary, checked) into an HF directory at `out`,
    with the first source's config, generation config and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer


    def load(source: str):
        with files.quiet():
            model = AutoModelForCausalLM.from_pretrained(source, dtype="auto", trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        return model, tokenizer

    base, tokenizer = load(sources[0])
    kind = (base.config.model_type, base.config.architectures)
    vocab = tokenizer.get_vocab()
    states = [base.state_dict()]
    for i, source in enumerate(sources[1:], start=1):
        model, other_tokenizer = load(source)
        if (model.config.model_type, model.config.architectures) != kind:
            raise UsageError(f"model.soup[{i}]={source} is a {model.config.model_type} {model.config.architectures}"
                             f", model.soup[0] a {kind[0]} {kind[1]}: a soup averages models of one architecture")
        if other_tokenizer.get_vocab() != vocab:
            raise UsageError(f"model.soup[{i}]={source} has another tokenizer vocabulary than model.soup[0]="
                             f"{sources[0]}: a soup averages models of one vocabulary")  # fmt: skip
        states.append(model.state_dict())
    try:
        averaged = average_state_dicts(states)
    except Mismatch as e:
        raise UsageError(f"model.soup[{e.index}]={sources[e.index]} does not fit model.soup[0]={sources[0]}: it "
                         f"{e.detail}; a soup averages models of one architecture") from None  # fmt: skip
    base.load_state_dict(averaged)
    files.save_hf_dir(base, tokenizer, out)
    write_info(out, {"entries": list(sources), "method": "linear"})
