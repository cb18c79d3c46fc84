"""A run's configuration: the typed schema (`schema`), Hydra composition and validation (`compose`), saved configs,
run names. Nothing here loads a model."""
