"""Model-side helpers: loading causal LMs and describing their LM heads for the fused kernels."""
