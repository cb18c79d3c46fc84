"""Model-side helpers: loading causal LMs, describing their LM heads for the fused kernels, scoring sequences (log-probs, divergences) and sampling completions."""
