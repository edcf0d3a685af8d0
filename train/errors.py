"""Exceptions of the train package (see :mod:`solvers.errors` for the hierarchy).

Bad input (settings, an output folder, a checkpoint) is an
:class:`~solvers.errors.InputError` (so a ``ValueError``; ``train-surrogate`` exits with 2), a
failure while training a :class:`~solvers.errors.RunError` (so a ``RuntimeError``; exit 1).
The shared :class:`~solvers.errors.ConfigError` and :class:`~solvers.errors.UsageError` are
re-exported.
"""

from __future__ import annotations

from solvers.errors import ConfigError, InputError, RunError, UsageError

__all__ = ["CheckpointError", "ConfigError", "MemoryEstimateError", "NonFiniteTrainingError",
           "OutputFolderError", "UsageError"]


class NonFiniteTrainingError(RunError):
    """The training objective or its derivatives became NaN or inf (the run stops; nothing
    non-finite is saved).

    Attributes
    ----------
    located : bool
        The message already names the method, level and iteration (set by the monitor).
    """

    located: bool = False


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed (missing, corrupt, different run)."""


class OutputFolderError(InputError):
    """The output folder holds another run's model or checkpoint (or is not a folder)."""


class MemoryEstimateError(InputError):
    """Settings whose estimated memory exceeds what the device has free."""
