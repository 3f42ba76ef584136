"""Errors that the CLI turns into one clear line and a non-zero exit code.

Anything raised as a :class:`FerkitError` is a problem with the user's input (a missing file,
a csv without the right columns, an unknown label or config key); the CLI prints
``ferkit: error: <message>`` and exits with status 2 instead of a traceback.
"""

from __future__ import annotations


class FerkitError(Exception):
    """Base class for user-facing errors (bad input, not a bug)."""


class InputError(FerkitError):
    """A missing, unreadable or malformed input file."""


class UnknownLabelError(FerkitError, KeyError):
    """A label name or code that no label map knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(FerkitError):
    """An unknown config key, a bad value or an unknown registered name."""


class TrainingDiverged(FerkitError):
    """The training loss became NaN or infinite: the run stops, and its directory says where."""
