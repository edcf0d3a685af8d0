"""The project's exception hierarchy (its root lives here, in the lowest layer).

Every error the project raises on purpose derives from :class:`VarproError`. Bad input (a
value, a file, a setting) is an :class:`InputError`, which is also a :class:`ValueError`; a
failure while running is a :class:`RunError`, which is also a :class:`RuntimeError`. So
``except ValueError`` in user code keeps working, and ``except VarproError`` catches
everything the package reports. Each package adds its own classes in its ``errors`` module
(:mod:`datasets.errors`, :mod:`surrogate.errors`, :mod:`train.errors`).
"""

from __future__ import annotations


class VarproError(Exception):
    """Base of every exception raised on purpose by varpro-surrogates."""


class InputError(VarproError, ValueError):
    """Bad input: a value, file, option or setting given by the user (message names it)."""


class RunError(VarproError, RuntimeError):
    """A failure while running (a solve, a training run) on valid input."""


class UsageError(InputError):
    """A command-line usage error (exit status 2)."""


class ConfigError(InputError):
    """A configuration value (option, TOML file entry, ``--set``) is invalid."""


class OutputPathError(InputError):
    """An output path cannot be written (not a regular file, inside a non-folder, ...)."""


class SolverSettingsError(ConfigError):
    """A solver setting (mesh size, time step, ...) is invalid."""


class MPIStartError(RunError):
    """MPI cannot start in this environment (e.g. a file-size limit too small for its
    shared-memory files); raised before MPI_Init, which would abort with a stack dump."""


class SolveError(RunError):
    """A sample could not be solved (Newton or Krylov failure); never returned as numbers.

    Attributes
    ----------
    sample : int or None
        Index of the sample in the dataset, if known.
    time : float or None
        Model time at which the failure happened (time-dependent problems), else None.
    reason : str
        Human-readable cause, e.g. "Newton diverged after 4 halvings of dt".
    """

    def __init__(self, reason: str, *, sample: int | None = None, time: float | None = None):
        self.reason = reason
        self.sample = sample
        self.time = time
        where = []
        if sample is not None:
            where.append(f"sample {sample}")
        if time is not None:
            where.append(f"t = {time:.6g}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + reason)


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived (raised by the handler of :mod:`solvers.common.cli`).

    A BaseException (like KeyboardInterrupt), so that no ``except Exception`` in a solver,
    the dataset engine or a training loop swallows it.
    """

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")
