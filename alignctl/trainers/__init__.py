"""Thin TRL subclasses: each `compute_loss` calls its objective's pure function; batches, sampling and the shared
reference log-prob cache they read."""
