"""Errors a user should read as one line, without a traceback.

Every command line (`python -m emergent ...`, `python -m emergent.stages ...`) catches
`UserError` and prints `error: <message>`; anything else is a bug and keeps its traceback.
Library code raises the specific subclass that says where the problem is.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem the user can fix (bad input, missing upstream output, bad config)."""

    #: the command line's exit status for this kind (1 unless a kind says otherwise)
    exit_code: int = 1
    #: what the command line prints before the message
    prefix: str = "error: "


class DataError(UserError, ValueError):
    """Bad input data. The message always names the file and, where known, the line or column."""

    def __init__(self, source: str | Path, message: str, line: int | None = None) -> None:
        self.source = str(source)
        self.line = line
        where = f"{source}:{line}" if line is not None else str(source)
        super().__init__(f"{where}: {message}")


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message names the config key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


class StageError(UserError, RuntimeError):
    """A stage failed for a reason the user should read (a failed gate, a missing input)."""


class PredictionError(UserError, ValueError):
    """Input the model cannot take (empty text, ...): a message for the user, not a crash."""


class GateRefused(UserError):
    """The promotion gate refused the candidate: not a failure of the command, a decision,
    so it exits with its own status (3) that scripts can tell from an error (1)."""

    exit_code = 3


class NothingToDo(UserError):
    """A loop iteration found no reason to retrain: not an error either, so it exits with its
    own status (10) and its message is printed without `error:`."""

    exit_code = 10
    prefix = ""


class ExampleError(UserError, ValueError):
    """A labelled example that breaks its task's rules (unknown label, tags not IOB2, ...).

    `field` names the offending field of the example (`label`, `tags`, ...), so a caller
    that holds many examples can say which one and where: `examples[3].tags`."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
