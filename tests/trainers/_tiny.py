"""A tiny arithmetic-flavoured model and prompts shared by the online trainer tests."""

import torch

TEXTS = ["Q: 12+34=? A: 2+4=6; 1+3=4. The answer is 46.", "Q: 55+17=? A: 5+7=12, carry 1. The answer is 72."] * 8
PROMPTS = ["Q: 12+34=? A:", "Q: 55+17=? A:", "Q: 40+21=? A:", "Q: 33+33=? A:"]


def length_reward(prompts, completions):  # varies within a group, so advantages are not all zero
    return [float(sum(map(ord, c)) % 3) for c in completions]


def plain_token_logps(model, input_ids, attention_mask, completion_mask):
    """Full logits, log_softmax, gather: [B, T-1], independent of alignctl's kernels."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits[:, :-1]
    return torch.log_softmax(logits.double(), -1).gather(-1, input_ids[:, 1:, None])[..., 0]
