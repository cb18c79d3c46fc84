"""Datasets in TRL's formats: loaders, the embedded default tasks (``tasks/``) and the build cache."""
