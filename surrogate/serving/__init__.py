"""Serving a trained surrogate: the UM-Bridge server ``serve-surrogate`` and the UQ models.

The top layer of the package (it imports :mod:`surrogate` core, :mod:`datasets` and
:mod:`solvers`; nothing imports it), split by concern:

:mod:`~surrogate.serving.posterior`  :class:`GaussianPosterior`: Gaussian likelihood, uniform
                                     prior on the training box, gradient, Laplace covariance.
:mod:`~surrogate.serving.pde_model`  :class:`PDEModel`: the PDE with the surrogate's call shape
                                     (finite-difference Jacobian).
:mod:`~surrogate.serving.adapters`   :class:`ForwardModel`, :class:`PosteriorModel`: UM-Bridge
                                     models; request parsing and validation.
:mod:`~surrogate.serving.app`        :func:`make_app` (aiohttp application), :func:`serve`.
:mod:`~surrogate.serving.cli`        ``serve-surrogate`` (:func:`main`).

Names are imported on first use, so ``from surrogate.serving import PDEModel`` or
``GaussianPosterior`` does not load aiohttp or umbridge.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from surrogate.serving.adapters import ForwardModel, PosteriorModel
    from surrogate.serving.app import PROTOCOL_VERSION, make_app, serve
    from surrogate.serving.cli import main
    from surrogate.serving.pde_model import PDEModel
    from surrogate.serving.posterior import GaussianPosterior

_WHERE = {
    "ForwardModel": "adapters", "PosteriorModel": "adapters",
    "PROTOCOL_VERSION": "app", "make_app": "app", "serve": "app",
    "main": "cli",
    "PDEModel": "pde_model",
    "GaussianPosterior": "posterior",
}

__all__ = ["PROTOCOL_VERSION", "ForwardModel", "GaussianPosterior", "PDEModel",
           "PosteriorModel", "main", "make_app", "serve"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
