"""Evaluation: sampling held-out completions and the pure metric functions in `alignctl.eval.metrics`."""
