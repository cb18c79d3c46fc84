"""alignctl: one command-line runner for preference-alignment experiments."""

__version__ = "0.1.0"
