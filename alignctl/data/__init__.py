"""Datasets in TRL's formats: loaders (`sources/`), the embedded default tasks (`tasks/`) and sampled pairs."""
