"""Building blocks for the embedded tasks' tiny language models: a byte-level BPE tokenizer trained on a
corpus, a tiny Llama pretrained with TRL's SFTTrainer, and seeded batched sampling.

Nothing here knows about a particular task; ``toy_sentiment`` (and later ``toy_arith``) compose these.
Heavy imports (torch, transformers, trl) happen inside the functions so importing the package stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from alignctl.cache import INFO_FILE, cached
from alignctl.models import files

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from alignctl.models.schema import TinyModelConfig

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
console = Console(stderr=True)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python, NumPy and torch (CPU and CUDA) RNG states on exit: building a cached artifact seeds
    globally (TRL's trainers call ``set_seed``), which must not leak into the caller's run."""
    import random

    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def progress() -> Progress:
    """The one progress-bar style used for long steps (transient: leaves only the summary line behind)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # no live display in logs/CI: the summary lines say it all
    )


def train_bpe_tokenizer(
    texts: list[str], vocab_size: int, model_max_length: int, individual_digits: bool = False
) -> PreTrainedTokenizerBase:
    """Byte-level BPE (GPT-2 style, no prefix space) with BOS prepended by the post-processor; EOS and PAD exist
    as special tokens. The vocabulary can end below ``vocab_size`` when every corpus word is already one token.
    ``individual_digits`` (toy_arith): merges never span digits, so each digit is one token (with the space
    before it, if any), the same for every number, as column arithmetic wants."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if individual_digits:
        digit = pre_tokenizers.Split(Regex(r" ?[0-9]"), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([digit, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=model_max_length
    )


def build_llama(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised tiny LlamaForCausalLM (tied embeddings) sized by ``cfg``, seeded by ``cfg.seed``."""
    import torch
    from transformers import LlamaForCausalLM, set_seed

    config = llama_config(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    set_seed(cfg.seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def llama_config(cfg: TinyModelConfig, vocab_size: int, bos_token_id=None, eos_token_id=None, pad_token_id=None):
    """The LlamaConfig of ``build_llama``'s model with a vocabulary of ``vocab_size`` tokens."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def meta_llama(cfg: TinyModelConfig) -> PreTrainedModel:
    """``build_llama``'s architecture on the meta device (its modules, nothing computed or stored), before the
    tokenizer exists: sized for ``cfg.vocab_size`` tokens, the BPE target (the built vocabulary may be smaller)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(llama_config(cfg, cfg.vocab_size))


def pretrain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    cfg: TinyModelConfig,
    desc: str,
    sampling: str = "group_by_length",
) -> dict[str, Any]:
    """Plain language modelling on ``texts`` (each wrapped in BOS ... EOS) with TRL's SFTTrainer, in place.

    fp32, no gradient checkpointing, nothing saved or reported; a rich progress bar shows the step and the
    running loss. ``sampling`` is the Trainer's ``train_sampling_strategy``: "group_by_length" (batches of similar
    lengths, less padding) or "random". Returns ``{"loss": last logged training loss, "seconds": wall time}``.
    """
    import datasets
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    logged: dict[str, float] = {}

    with progress() as bar, files.quiet(), tempfile.TemporaryDirectory(prefix="alignctl-sft-") as out:
        task = bar.add_task(desc, total=cfg.pretrain_steps, info="")

        class _Progress(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                bar.update(task, completed=state.global_step)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    logged["loss"] = float(logs["loss"])
                    bar.update(task, info=f"loss {logs['loss']:.3f}")

        args = SFTConfig(
            output_dir=out,
            max_steps=cfg.pretrain_steps,
            per_device_train_batch_size=cfg.pretrain_batch_size,
            learning_rate=cfg.pretrain_lr,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            weight_decay=0.0,
            max_grad_norm=1.0,
            max_length=cfg.max_position_embeddings,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            seed=cfg.seed,
            data_seed=cfg.seed,
            report_to="none",
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=max(1, cfg.pretrain_steps // 20),
            disable_tqdm=True,
            log_level="error",
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            train_sampling_strategy=sampling,
            push_to_hub=False,
        )
        start = time.perf_counter()
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=datasets.Dataset.from_dict({"text": texts}),
            processing_class=tokenizer,
            callbacks=[_Progress()],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.train()
        model.eval()
    return {"loss": logged.get("loss", float("nan")), "seconds": time.perf_counter() - start}


def sample_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    num_samples: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 512,
    desc: str = "sampling",
) -> list[list[str]]:
    """``num_samples`` ancestral samples (temperature 1, no top-k/top-p) per prompt, decoded without special
    tokens and cut at EOS. Row-seeded (:func:`alignctl.models.sampling.draw_rows`): sample j of prompt i is drawn
    with noise keyed by ``(seed, i * num_samples + j)``, so results depend only on the arguments (and the machine),
    not on ``batch_size`` (sequences per ``generate()`` call), on how prompts are grouped (batches of similar
    prompt length, the least padding) or on the caller's RNG state."""
    import torch

    from alignctl.models.sampling import BUILD_STEP, draw_rows

    side = tokenizer.padding_side
    try:
        with progress() as bar, files.quiet(), torch.inference_mode():
            task = bar.add_task(desc, total=len(prompts) * num_samples, info="")
            rows = draw_rows(
                model, tokenizer, list(prompts), num_samples, max_new_tokens, temperature=1.0, seed=seed,
                batch_size=batch_size, step=BUILD_STEP, on_batch=lambda k: bar.update(task, advance=k),
            )  # fmt: skip
    finally:
        tokenizer.padding_side = side
    out = tokenizer.batch_decode([completion for _, completion in rows], skip_special_tokens=True)
    return [out[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def param_count(model: PreTrainedModel) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def cached_base_model(kind: str, recipe: dict[str, Any], build: Any, summary: Any) -> Path:
    """The cached HF directory built by ``build(out)`` (caller's RNG states preserved); when this call built it,
    print ``summary(info, path)`` from its build_info.json."""
    built = False

    def build_once(out: Path) -> None:
        nonlocal built
        built = True
        with preserved_rng():
            build(out)

    path = cached(kind, recipe, build_once)
    if built:
        info = json.loads((path / INFO_FILE).read_text())
        console.print(summary(info, path), soft_wrap=True, highlight=False)
    return path
