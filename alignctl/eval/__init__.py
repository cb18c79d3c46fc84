"""Evaluation: the pure metric functions (`metrics`) and the reward-KL curve recorded while training (`curve`)."""
