"""Embedded default tasks, built locally (no downloads) and cached: ``toy_sentiment`` (and its helpers
``review_grammar`` for the corpus and ``tiny_lm`` for tokenizer, pretraining and sampling)."""
