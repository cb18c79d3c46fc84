"""Typed schemas of every config group; validated right after Hydra composes them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ToySentimentConfig:
    """The embedded controlled-sentiment task (DESIGN.md section 5)."""

    name: str = "toy_sentiment"
    seed: int = 0
    corpus_size: int = 20000  # generated reviews for tokenizer + pretraining
    prompt_words: int = 4  # a prompt is the first few words of a held-out review
    num_train_prompts: int = 1024  # preference pairs for training
    num_test_prompts: int = 128  # held-out prompts/pairs for eval
    samples_per_prompt: int = 4  # continuations sampled per prompt to build a pair (best vs worst)
    max_new_tokens: int = 24


@dataclass
class TinyModelConfig:
    """The embedded tiny Llama-architecture LM, pretrained locally with TRL's SFTTrainer."""

    name: str = "tiny"
    seed: int = 0
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 128
    pretrain_steps: int = 300
    pretrain_batch_size: int = 32
    pretrain_lr: float = 3e-3
