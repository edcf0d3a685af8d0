"""Exceptions of the datasets package; all are user errors (ValueError subclasses)."""

from __future__ import annotations


class DatasetFileError(ValueError):
    """A dataset file is missing, corrupt, truncated or not in a supported format.

    The message always starts with the file's path and says what is wrong.
    """


class DatasetWriteError(DatasetFileError):
    """The dataset file could not be written (disk full, quota, I/O error); the previous
    version of the file, if any, is intact and the temporary file has been removed."""


class ConfigError(ValueError):
    """A generation option or solver setting given by the user is invalid."""


class ConfigMismatchError(ValueError):
    """Resuming into a file that was started with a different configuration."""


class Interrupted(BaseException):
    """The job received SIGTERM or SIGINT; rank 0 saved its progress before stopping.

    A BaseException (like KeyboardInterrupt), so that no ``except Exception`` in a solver or
    the engine swallows it.
    """

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")
