"""Exceptions of the datasets package (see :mod:`solvers.errors` for the hierarchy).

All but :class:`~solvers.errors.Interrupted` and :class:`ProblemBrokeContract` (a RunError) are
user errors (InputError, so ValueError).
"""

from __future__ import annotations

from solvers.errors import ConfigError, InputError, Interrupted, RunError

__all__ = ["ConfigError", "ConfigMismatchError", "DataError", "DatasetFileError",
           "DatasetWriteError", "Interrupted", "ProblemBrokeContract"]


class DatasetFileError(InputError):
    """A dataset file is missing, corrupt, truncated or not in a supported format.

    The message always starts with the file's path and says what is wrong.
    """


class DatasetWriteError(DatasetFileError):
    """The dataset file could not be written (disk full, quota, I/O error); the previous
    version of the file, if any, is intact and the temporary file has been removed."""


class ConfigMismatchError(InputError):
    """Resuming into a file that was started with a different configuration."""


class ProblemBrokeContract(RunError):
    """A problem broke its contract during a run (observables of the wrong shape or type, or
    a collective solve that timed out): the job stops (exit status 1) after saving every
    result so far; the message names the problem, the plugin and the sample."""


class DataError(InputError):
    """Unusable training data (no training samples, inconsistent shapes, ...)."""
