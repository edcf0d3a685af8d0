"""Exceptions of the datasets package; all are user errors (ValueError subclasses)."""

from __future__ import annotations


class DatasetFileError(ValueError):
    """A dataset file is missing, corrupt, truncated or not in a supported format.

    The message always starts with the file's path and says what is wrong.
    """


class ConfigError(ValueError):
    """A generation option or solver setting given by the user is invalid."""


class ConfigMismatchError(ValueError):
    """Resuming into a file that was started with a different configuration."""
