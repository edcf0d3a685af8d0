"""The PDE as a model with the surrogate's call shape: ``model(y)`` (n, d) -> (n, m).

::

    from surrogate.serving import PDEModel
    pde = PDEModel("dcr", {"n_cells": [24, 24, 12]})     # or PDEModel.from_dataset("d.h5")
    c = pde(y)                                           # (n, 882), one solve per row
    J = pde.jacobian(y)                                  # (n, 882, 3), finite differences

so a UQ script switches fidelity by swapping ``surrogate.load(model_dir)`` for a PDEModel. The
solver object (mesh, matrices, KSP) is built once, on ``MPI.COMM_SELF`` unless a communicator
is given, from the same problem name and solver settings as a dataset (the dataset's
``config`` attribute records them: ``from_dataset``; a trained surrogate's metadata records the
dataset's: ``from_surrogate_metadata``).

Jacobian
--------
Central differences, ``dc/dy_k ~ (c(y + h_k e_k) - c(y - h_k e_k)) / (2 h_k)`` with
``h_k = fd_step * scale_k`` (``scale_k`` = width of the parameter range for DCR, else
``max(|y_k|, 1)``; default ``fd_step`` 1e-4, so truncation error O(h^2) ~ 1e-8 relative and
solver noise (CG rtol 1e-10) / h ~ 1e-7). Where a central step would leave the parameter range
(DCR ranges, CDR y >= 0) a one-sided second-order difference is used inside. Cost: 2 d extra
solves per sample (6 for DCR, 110 for CDR) on top of the value.

It lives above :mod:`datasets` (``from_dataset`` reads a dataset file) and reads a model's
provenance through :mod:`surrogate.metadata`; the module itself never imports torch.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from solvers.common.validation import check_batch
from solvers.errors import InputError, SolveError
from surrogate.metadata import solver_provenance


class PDEModel:
    """A PDE solver behind the batched ``model(y)`` interface.

    Parameters
    ----------
    problem : {"cdr", "dcr"}
    settings : dict, optional
        Solver settings (constructor keywords); SPEC defaults otherwise.
    comm : mpi4py communicator, optional
        Default COMM_SELF.
    fd_step : float
        Relative finite-difference step of :meth:`jacobian`.

    Attributes
    ----------
    solver : the PDE solver (built once)
    n_in, n_out : int
    input_names : list of str
    output_coords : dict name -> numpy.ndarray (n_out,)
    lower, upper : numpy.ndarray (n_in,)
        Parameter ranges (DCR: the sampling ranges; CDR: [0, 1]).
    n_solves : int
        PDE solves done so far (values and finite differences).
    """

    def __init__(self, problem: str, settings: dict[str, Any] | None = None, *,
                 comm: Any = None, fd_step: float = 1e-4) -> None:
        from solvers import make_solver

        self.problem = str(problem)
        self.settings_in = dict(settings or {})
        self.solver = make_solver(self.problem, comm, **self.settings_in)
        if not (np.isfinite(fd_step) and fd_step > 0):
            raise InputError(f"fd_step must be finite and > 0, got {fd_step!r}")
        self.fd_step = float(fd_step)
        self.n_in = int(self.solver.n_parameters)
        self.n_out = int(self.solver.n_observables)
        names = getattr(self.solver, "parameter_names", None)
        self.input_names = list(names) if names else [f"y{k}" for k in range(self.n_in)]
        coords = getattr(self.solver, "observable_coords", None)
        self.output_coords = coords() if callable(coords) else {}
        bounds = getattr(self.solver, "parameter_bounds", None)
        if bounds is not None:
            b = np.asarray(bounds, dtype=np.float64)
            self.lower, self.upper = b[:, 0].copy(), b[:, 1].copy()
        else:
            self.lower, self.upper = np.zeros(self.n_in), np.ones(self.n_in)
        self._bounded = bounds is not None
        self.n_solves = 0
        self._lock = threading.Lock()        # one solver object: one solve at a time

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: dict | str, **kwargs: Any) -> PDEModel:
        """From a dataset's ``config`` attribute (``{"problem", "solver": settings, ...}``,
        a dict or its JSON string)."""
        cfg = json.loads(config) if isinstance(config, str) else dict(config)
        if "problem" not in cfg:
            raise InputError("the configuration names no problem")
        return cls(cfg["problem"], cfg.get("solver") or {}, **kwargs)

    @classmethod
    def from_dataset(cls, path: str | Path, **kwargs: Any) -> PDEModel:
        """Same problem and solver settings as the dataset file ``path`` (generate-dataset)."""
        from datasets import open_dataset

        ds = open_dataset(path)
        cfg = json.loads(ds.attrs.get("config", "{}"))
        if "solver" not in cfg:
            raise InputError(f"{path}: no solver settings recorded (not made by "
                             "generate-dataset); build PDEModel(problem, settings) instead")
        return cls.from_config(cfg, **kwargs)

    @classmethod
    def from_surrogate_metadata(cls, metadata: dict, **kwargs: Any) -> PDEModel:
        """The PDE a surrogate was trained for (its training data's recorded solver settings,
        :func:`surrogate.metadata.solver_provenance`)."""
        provenance = solver_provenance(metadata)
        if provenance is None:
            raise InputError("the surrogate's metadata records no solver settings of its "
                             "training data")
        return cls(provenance.problem, provenance.settings, **kwargs)

    # ------------------------------------------------------------------ checks
    def _check(self, y: Any, name: str = "y") -> np.ndarray:
        """``y`` (n, n_in) or (n_in,) as a float64 batch (n, n_in) (:func:`check_batch`)."""
        return check_batch(y, self.n_in, name)

    def _solve(self, y: np.ndarray) -> np.ndarray:
        with self._lock:
            self.n_solves += 1
            return np.asarray(self.solver.solve(y), dtype=np.float64)

    # ------------------------------------------------------------------ public
    def __call__(self, y: Any) -> np.ndarray:
        """Observables, one solve per row.

        Parameters
        ----------
        y : array_like, shape (n, n_in) or (n_in,)

        Returns
        -------
        numpy.ndarray, shape (n, n_out) or (n_out,), float64

        Raises
        ------
        ValueError
            Bad shape/dtype, NaN/inf, or parameters the solver rejects (naming them); an
        :class:`~solvers.errors.InputError`.
        solvers.errors.SolveError
            A solve failed.
        """
        single = np.ndim(y) == 1
        arr = self._check(y)
        out = np.empty((arr.shape[0], self.n_out))
        for i, row in enumerate(arr):
            out[i] = self._solve(row)
        return out[0] if single else out

    def _steps(self, y: np.ndarray) -> np.ndarray:
        scale = (self.upper - self.lower) if self._bounded else np.maximum(np.abs(y), 1.0)
        return self.fd_step * scale

    def value_and_jacobian(self, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Observables and finite-difference Jacobian (see the module docstring).

        Returns
        -------
        c : numpy.ndarray, shape (n, n_out) (or (n_out,))
        J : numpy.ndarray, shape (n, n_out, n_in) (or (n_out, n_in))
        """
        single = np.ndim(y) == 1
        arr = self._check(y)
        n, d = arr.shape
        C = np.empty((n, self.n_out))
        J = np.empty((n, self.n_out, d))
        for i, row in enumerate(arr):
            C[i] = c0 = self._solve(row)
            h = self._steps(row)
            for k in range(d):
                e = np.zeros(d)
                e[k] = h[k]
                if row[k] - h[k] < self.lower[k]:          # one-sided, second order, inward
                    c1, c2 = self._solve(row + e), self._solve(row + 2 * e)
                    J[i, :, k] = (-3 * c0 + 4 * c1 - c2) / (2 * h[k])
                elif self._bounded and row[k] + h[k] > self.upper[k]:
                    c1, c2 = self._solve(row - e), self._solve(row - 2 * e)
                    J[i, :, k] = (3 * c0 - 4 * c1 + c2) / (2 * h[k])
                else:
                    J[i, :, k] = (self._solve(row + e) - self._solve(row - e)) / (2 * h[k])
        return (C[0], J[0]) if single else (C, J)

    def jacobian(self, y: Any) -> np.ndarray:
        """Finite-difference dc/dy, shape (n, n_out, n_in) (2 d solves per sample + 1)."""
        return self.value_and_jacobian(y)[1]

    def jvp(self, y: Any, v: Any) -> np.ndarray:
        """J(y_i) v_i from the finite-difference Jacobian, shape (n, n_out)."""
        single = np.ndim(y) == 1
        J = self.value_and_jacobian(np.atleast_2d(y))[1]
        V = np.broadcast_to(self._check(v, "v"), (J.shape[0], self.n_in))
        out = np.einsum("nmd,nd->nm", J, V)
        return out[0] if single else out

    def vjp(self, y: Any, w: Any) -> np.ndarray:
        """J(y_i)^T w_i from the finite-difference Jacobian, shape (n, n_in)."""
        single = np.ndim(y) == 1
        J = self.value_and_jacobian(np.atleast_2d(y))[1]
        Wv = np.asarray(w, dtype=np.float64)
        Wv = np.broadcast_to(Wv if Wv.ndim == 2 else Wv[None], (J.shape[0], self.n_out))
        out = np.einsum("nmd,nm->nd", J, Wv)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"PDEModel({self.problem!r}, {self.settings_in!r}: {self.n_in} -> {self.n_out})"


__all__ = ["PDEModel", "SolveError"]
