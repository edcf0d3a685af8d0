"""Parsing and checking the ``--device`` option of every command (cpu, cuda, cuda:N)."""

from __future__ import annotations

import torch

from solvers.errors import UsageError


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device; CUDA must be available.

    Raises
    ------
    UsageError
        Any other name (``meta``, ``mps``, ``cuda:x``), CUDA absent, or no such CUDA device.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise UsageError(f"{option} {name!r}: expected cpu, cuda or cuda:N") from None
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {name}: CUDA is not available on this machine "
                             f"(torch {torch.__version__}); use {option} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{option} {name}: only {torch.cuda.device_count()} CUDA "
                             "device(s) present")
        return dev
    raise UsageError(f"{option} {name!r}: expected cpu, cuda or cuda:N")


def training_device(trained: str) -> torch.device:
    """The device a model was trained on if it is available here, else the CPU."""
    if trained.startswith("cuda") and torch.cuda.is_available():
        try:
            dev = torch.device(trained)
        except RuntimeError:
            return torch.device("cpu")
        if dev.index is None or dev.index < torch.cuda.device_count():
            return dev
    return torch.device("cpu")
