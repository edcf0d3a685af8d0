"""The PDE as a model with the surrogate's call shape: ``model(y)`` (n, d) -> (n, m).

::

    from surrogate.serving import PDEModel
    pde = PDEModel("dcr", {"n_cells": [24, 24, 12]})     # or PDEModel.from_dataset("d.h5")
    c = pde(y)                                           # (n, 882), one solve per row
    J = pde.jacobian(y)                                  # (n, 882, 3), finite differences
    kl = PDEModel("examples/diffusion_kl.py:DiffusionKL", {"n_cells": 24})   # any problem spec

so a UQ script switches fidelity by swapping ``surrogate.load(model_dir)`` for a PDEModel. The
problem is any spec :func:`solvers.plugins.resolve_problem` accepts. The solver object (mesh,
matrices, KSP) is built once, on ``MPI.COMM_SELF`` unless a communicator is given, from the
same problem and solver settings as a dataset (the dataset's ``config`` attribute records
them, with the plugin's identity: ``from_dataset``; a trained surrogate's metadata records the
dataset's: ``from_surrogate_metadata``). Built from a record, the plugin is re-resolved where
it was (a file plugin by its absolute path) and refused if its code or settings changed since
(:class:`solvers.plugins.PluginChangedError` naming what changed) unless
``allow_changed_plugin=True``.

Jacobian
--------
Central differences, ``dc/dy_k ~ (c(y + h_k e_k) - c(y - h_k e_k)) / (2 h_k)`` with
``h_k = fd_step * scale_k`` (``scale_k`` = width of the parameter box where the problem
declares one (DCR's ranges, CDR's [0, 1]), else ``max(|y_k|, 1)``; default ``fd_step`` 1e-4, so
truncation error O(h^2) ~ 1e-8 relative and solver noise (CG rtol 1e-10) / h ~ 1e-7). Where a
central step would leave the box (DCR ranges, CDR y >= 0) a one-sided second-order difference
is used inside. Cost: 2 d extra solves per sample (6 for DCR, 110 for CDR) on top of the
value.

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
    problem : str
        A problem spec: a registered name (:data:`solvers.SOLVERS`), an entry point,
        ``package.module:Class`` or ``path/file.py:Class``.
    settings : dict, optional
        Solver settings (constructor keywords); the problem's defaults otherwise.
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
        The parameter box the problem declares (DCR: the sampling ranges; CDR: [0, 1]);
        -inf / inf where it declares none.
    info : solvers.plugins.ProblemInfo
        The problem's facts and identity (``info.provenance()``).
    plugin_changes : list of str
        What changed in the plugin since the record it was built from (empty unless
        ``allow_changed_plugin``).
    n_solves : int
        PDE solves done so far (values and finite differences).
    """

    def __init__(self, problem: str, settings: dict[str, Any] | None = None, *,
                 comm: Any = None, fd_step: float = 1e-4) -> None:
        from solvers.plugins import resolve_problem

        self.problem = str(problem)
        self.settings_in = dict(settings or {})
        if not (np.isfinite(fd_step) and fd_step > 0):
            raise InputError(f"fd_step must be finite and > 0, got {fd_step!r}")
        self._problem = resolve_problem(self.problem)
        self.solver = self._problem.build(comm, **self.settings_in)
        self.info = self._problem.describe(self.solver)
        self.plugin_changes: list[str] = []
        self.fd_step = float(fd_step)
        self.n_in, self.n_out = self.info.n_parameters, self.info.n_observables
        self.input_names = list(self.info.parameter_names)
        self.output_coords = dict(self.info.observable_coords)
        box = self.info.parameter_box
        if box is not None:
            self.lower, self.upper = box[:, 0].copy(), box[:, 1].copy()
        else:
            self.lower, self.upper = np.full(self.n_in, -np.inf), np.full(self.n_in, np.inf)
        self._bounded = box is not None
        self.n_solves = 0
        self._lock = threading.Lock()        # one solver object: one solve at a time

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_record(cls, problem: str, settings: dict[str, Any], plugin: dict | None, *,
                    allow_changed_plugin: bool = False, what: str = "the data",
                    option: str = "allow_changed_plugin=True", **kwargs: Any) -> PDEModel:
        """The recorded problem (name, settings and plugin identity of a dataset's
        configuration), refused if the plugin changed since unless ``allow_changed_plugin``
        (:func:`solvers.plugins.check_unchanged`)."""
        from solvers.plugins import check_unchanged, recorded_spec

        model = cls(recorded_spec(problem, plugin), settings, **kwargs)
        model.plugin_changes = check_unchanged(plugin, settings, model.info,
                                               allow=allow_changed_plugin, what=what,
                                               option=option)
        return model

    @classmethod
    def from_config(cls, config: dict | str, *, allow_changed_plugin: bool = False,
                    **kwargs: Any) -> PDEModel:
        """From a dataset's ``config`` attribute (``{"problem", "solver": settings, "plugin":
        identity, ...}``, a dict or its JSON string)."""
        cfg = json.loads(config) if isinstance(config, str) else dict(config)
        if "problem" not in cfg:
            raise InputError("the configuration names no problem")
        plugin = cfg.get("plugin")
        return cls.from_record(cfg["problem"], cfg.get("solver") or {},
                               plugin if isinstance(plugin, dict) else None,
                               allow_changed_plugin=allow_changed_plugin, **kwargs)

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
    def from_surrogate_metadata(cls, metadata: dict, *, allow_changed_plugin: bool = False,
                                option: str = "allow_changed_plugin=True",
                                **kwargs: Any) -> PDEModel:
        """The PDE a surrogate was trained for (its training data's recorded problem, plugin
        and solver settings, :func:`surrogate.metadata.solver_provenance`), refused if the
        plugin changed since unless ``allow_changed_plugin``."""
        provenance = solver_provenance(metadata)
        if provenance is None:
            raise InputError("the surrogate's metadata records no solver settings of its "
                             "training data")
        return cls.from_record(provenance.problem, provenance.settings, provenance.plugin,
                               allow_changed_plugin=allow_changed_plugin,
                               what="the surrogate's training data", option=option, **kwargs)

    # ------------------------------------------------------------------ checks
    def _check(self, y: Any, name: str = "y") -> np.ndarray:
        """``y`` (n, n_in) or (n_in,) as a float64 batch (n, n_in) (:func:`check_batch`)."""
        return check_batch(y, self.n_in, name)

    def _solve(self, y: np.ndarray) -> np.ndarray:
        from solvers.plugins import check_output, check_parameters

        y = check_parameters(self.solver, y)
        with self._lock:
            self.n_solves += 1
            c = self.solver.solve(y)
        return check_output(self.info, c, None)

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
