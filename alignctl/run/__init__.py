"""One run from a validated config: its inputs (`build`, `sources`), the run directory, launching (local,
accelerate, SLURM), tracking, training (`train`) and evaluation of the result (`evaluate`)."""
