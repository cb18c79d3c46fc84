"""Bad input from the user, reported as one line and exit code 2 (a leaf module: everything may import it)."""

from __future__ import annotations

import os
import sys

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class DataError(UsageError):
    """A dataset (file, column or row) that does not have what its loader needs: the message names the field or
    column, the value (and the row index) and what is expected."""


def fail(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # one rank of a multi-process run: the user reads the line once
        print(f"alignctl: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


class ConfigError(ValueError):
    """A bad config value: the message is one line naming the field, the value and the valid choices."""


class UserCodeError(Exception):
    """The user's own code (a reward function) raised: `line` names it and what it raised, `details` is its own
    traceback (the frames from the user's function down), printed after the line."""

    def __init__(self, line: str, details: str) -> None:
        super().__init__(line)
        self.line, self.details = line, details


class RunFailed(Exception):
    """A run that started and then ended unfinished (failed, diverged), its run.json already saying so: `line` is the
    one line for the user (with the resume command where a checkpoint exists), `details` what follows it (a user
    function's traceback), `code` the exit code."""

    def __init__(self, line: str, details: str = "", code: int = 1) -> None:
        super().__init__(line)
        self.line, self.details, self.code = line, details, code
