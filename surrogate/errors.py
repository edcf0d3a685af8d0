"""Exceptions of the surrogate package (core, evaluation and serving).

Bad input is an :class:`~solvers.errors.InputError` (so a ``ValueError``), a failure a
:class:`~solvers.errors.RunError` (so a ``RuntimeError``); see :mod:`solvers.errors`.
"""

from __future__ import annotations

from solvers.errors import InputError, RunError, UsageError, VarproError

__all__ = ["EvaluationError", "ExportCheckError", "ExportError", "NonFiniteModelError",
           "NormalizationError", "ReportWriteError", "RequestError", "SurrogateFormatError",
           "UsageError", "VarproError"]


class SurrogateFormatError(InputError):
    """A model directory that cannot be loaded (missing, tampered, wrong version)."""


class NonFiniteModelError(InputError):
    """A model with NaN or inf weights or normalisation statistics (never saved)."""


class NormalizationError(InputError):
    """Training data whose statistics cannot normalise it (constant or non-finite columns)."""


class EvaluationError(InputError):
    """An evaluation request that cannot be carried out (bad option, unusable model or data)."""


class ReportWriteError(RunError):
    """The evaluation report or a figure cannot be written (disk full, a file-size limit)."""


class RequestError(InputError):
    """A malformed UM-Bridge request (answered with an InvalidInput error body)."""


class ExportError(InputError):
    """A model that cannot be exported (architecture, encoding or option not supported)."""


class ExportCheckError(RunError):
    """The exported graph does not reproduce the torch model (a bug of the exporter)."""
