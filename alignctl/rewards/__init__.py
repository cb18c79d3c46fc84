"""Rewards: pure functions ``(prompts: list[str], completions: list[str]) -> list[float]``, one module each."""
