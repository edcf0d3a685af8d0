"""A trained surrogate as a callable model for UQ codes: ``surrogate.load(model_dir)``.

::

    import surrogate
    model = surrogate.load("model_dir")          # numpy + torch only, never dolfinx/PETSc/MPI
    c = model(y)                                 # (n, d) -> (n, m) float64; (d,) -> (m,)
    J = model.jacobian(y)                        # (n, m, d), autograd (forward mode)
    Jv = model.jvp(y, v)                         # (n, m)
    JTw = model.vjp(y, w)                        # (n, d)
    model.input_names, model.lower, model.upper, model.output_coords

Small batches (``n <= fast_max_batch``, default 16: MCMC calls one sample at a time) run a
NumPy mirror of the network (:mod:`surrogate.numpy_forward`, tested against
``SeparableModel.predict`` and autograd to round-off); larger batches, and networks the mirror
does not cover (float32, other extractors, an input encoding), run on torch. Jacobians use the
mirror's forward mode for every batch size (faster than torch's), else one torch ``jvp``.

Inputs are checked: a non-numeric, complex or boolean dtype, a wrong shape, NaN or inf raise
ValueError naming the problem; inputs outside the training parameter box (metadata
``"inputs"``, contract 1) give an :class:`OutOfBoxWarning`, or a ValueError with ``strict=True``.

Threads
-------
Every public method of :class:`SurrogateModel` may be called from many threads at once (a
UM-Bridge server's worker pool, a threaded sampler) and returns what a sequential call returns.
torch's forward-mode AD keeps its dual levels in one process-global table, so two threads in
``torch.func.jvp`` at once corrupt each other's tangents (wrong numbers or "forward AD level"
errors); every torch forward-mode call of this module therefore runs under one module-level
lock (:data:`FORWARD_AD_LOCK`). The NumPy mirror, the torch values and reverse mode
(:meth:`~SurrogateModel.vjp`) need no lock and run in parallel.

Sizes
-----
An empty batch (0 rows) gives empty results of the usual shapes. Before a large batch the
memory of the result is estimated (values: n x n_out, Jacobians: n x n_out x n_in float64
numbers, twice) and a batch that cannot fit is refused with a ValueError naming the row count;
the torch path runs in blocks of :data:`TORCH_BLOCK` rows, so its intermediates stay bounded.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import torch

from solvers.common.memory import check_memory
from solvers.common.validation import check_batch
from solvers.errors import InputError, UsageError
from surrogate.artifact import load_model
from surrogate.metadata import io_entries, is_ensemble, parameter_box, read_metadata
from surrogate.numpy_forward import build_numpy_forward


class OutOfBoxWarning(UserWarning):
    """An input lies outside the training parameter box (the surrogate extrapolates)."""


#: the input validator of every prediction entry point (see :mod:`solvers.common.validation`)
check_inputs = check_batch

#: serialises torch forward-mode AD (its dual levels are process-global, not per thread)
FORWARD_AD_LOCK = threading.Lock()
#: rows per block of the torch path for large batches (bounds the intermediate tensors)
TORCH_BLOCK = 65_536
#: bytes per float64 result value in the memory estimate (the result and one copy)
BYTES_PER_RESULT_VALUE = 16


def _locked_jvp(fn, primal: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """``torch.func.jvp(fn, (primal,), (tangent,))[1]`` under :data:`FORWARD_AD_LOCK`."""
    with FORWARD_AD_LOCK:
        return torch.func.jvp(fn, (primal,), (tangent,))[1].detach()


class SurrogateModel:
    """A loaded surrogate with the call shape UQ codes expect. Build with :func:`load`.

    Parameters
    ----------
    model : SeparableModel
    metadata : dict
        Contents of ``metadata.json``.
    strict : bool
        Inputs outside the training box raise ValueError instead of warning.
    fast_max_batch : int
        Batches up to this size use the NumPy mirror (when available).

    Attributes
    ----------
    n_in, n_out : int
    input_names : list of str
    output_names : list of str or None
    output_coords : dict of name -> numpy.ndarray (n_out,)
    lower, upper : numpy.ndarray (n_in,) or None
        Training parameter box (physical units); None when unknown.
    metadata : dict
    """

    def __init__(self, model, metadata: dict, *, strict: bool = False,
                 fast_max_batch: int = 16) -> None:
        self.torch_model = model.eval()
        self.metadata = metadata
        self.strict = bool(strict)
        self.fast_max_batch = int(fast_max_batch)
        self.n_in = int(model.n_in)            # raw parameters (before any input encoding)
        self.n_out = int(model.n_out)
        self._fast = build_numpy_forward(model)
        inputs, outputs = io_entries(metadata)
        inputs, outputs = inputs or {}, outputs or {}
        names = inputs.get("names")
        self.input_names = list(names) if names else [f"y{k}" for k in range(self.n_in)]
        onames = outputs.get("names")
        self.output_names = list(onames) if onames else None
        self.output_coords = {k: np.asarray(v) for k, v in (outputs.get("coords") or {}).items()}
        box = parameter_box(metadata)
        self.lower: np.ndarray | None = box.lower if box is not None else None
        self.upper: np.ndarray | None = box.upper if box is not None else None
        self._device = model.W.device

    # ------------------------------------------------------------------ properties
    @property
    def problem(self) -> str:
        """Problem name recorded at training (the data's problem, or "unknown")."""
        return str((self.metadata.get("training") or {}).get("problem", "unknown"))

    @property
    def uses_numpy_path(self) -> bool:
        """Whether small batches run the NumPy mirror (else always torch)."""
        return self._fast is not None

    def in_box(self, y) -> np.ndarray:
        """Boolean (n,): which samples lie inside the training box (all True if unknown)."""
        y = check_inputs(y, self.n_in)
        if self.lower is None:
            return np.ones(y.shape[0], dtype=bool)
        return np.all((y >= self.lower) & (y <= self.upper), axis=1)

    # ------------------------------------------------------------------ checks
    def _check(self, y, name: str = "y") -> np.ndarray:
        arr = check_inputs(y, self.n_in, name)
        lower, upper = self.lower, self.upper     # both set or both None
        if lower is not None and upper is not None and arr.shape[0] and (
                (arr < lower).any() or (arr > upper).any()):
            bad = np.argwhere((arr < lower) | (arr > upper))
            i, k = bad[0]
            msg = (f"{name}[{i}, {k}] ({self.input_names[k]}) = {arr[i, k]:.6g} is outside the "
                   f"training box [{lower[k]:.6g}, {upper[k]:.6g}] "
                   f"({len(np.unique(bad[:, 0]))} sample(s) outside); the surrogate "
                   "extrapolates there")
            if self.strict:
                raise ValueError(msg)
            warnings.warn(msg, OutOfBoxWarning, stacklevel=3)
        return arr

    def _check_vector(self, v, n: int, size: int, name: str) -> np.ndarray:
        arr = check_inputs(v, size, name)
        if arr.shape[0] != n:
            if arr.shape[0] == 1:
                arr = np.broadcast_to(arr, (n, size))
            else:
                raise ValueError(f"{name} has {arr.shape[0]} rows but y has {n}")
        return arr

    # ------------------------------------------------------------------ torch path
    def _phys(self, y: torch.Tensor) -> torch.Tensor:
        """Differentiable physical-units forward pass (with the input encoding, contract 3)."""
        m = self.torch_model
        enc = getattr(m, "encoding", None)
        if enc is not None:
            y = enc(y)
        norm = m.normalizer
        y_n = norm.transform_y(y.to(norm.y_shift.dtype)).to(m.W.dtype)
        return norm.inverse_c(m(y_n).to(norm.c_shift.dtype))

    def _tensor(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.float64, device=self._device)

    def _torch_jacobian(self, y: np.ndarray) -> np.ndarray:
        """Forward mode on torch, all d input directions in one batched jvp (each sample
        repeated d times with the unit tangents), shape (n, m, d)."""
        n, d = y.shape
        J = np.empty((n, self.n_out, d))
        block = max(1, TORCH_BLOCK // max(d, 1))
        for i in range(0, n, block):
            part = y[i:i + block]
            Y = self._tensor(np.repeat(part, d, axis=0))                # (k d, d)
            E = self._tensor(np.tile(np.eye(d), (len(part), 1)))
            jv = _locked_jvp(self._phys, Y, E)                          # (k d, m)
            J[i:i + block] = jv.reshape(len(part), d, -1).transpose(1, 2).cpu().numpy()
        return J

    def _torch_values(self, y: np.ndarray) -> np.ndarray:
        """The torch network's prediction (n, m), in blocks of :data:`TORCH_BLOCK` rows (one
        call, bitwise ``torch_model.predict``, up to that size)."""
        if y.shape[0] <= TORCH_BLOCK:
            return self.torch_model.predict(y)
        out = np.empty((y.shape[0], self.n_out))
        for i in range(0, y.shape[0], TORCH_BLOCK):
            out[i:i + TORCH_BLOCK] = self.torch_model.predict(y[i:i + TORCH_BLOCK])
        return out

    def _guard(self, n: int, per_row: int, what: str) -> None:
        """Refuse (InputError, a ValueError) a batch whose results cannot fit in memory."""
        if n * per_row * BYTES_PER_RESULT_VALUE > 1 << 26:       # only look above 64 MiB
            check_memory(float(n) * per_row * BYTES_PER_RESULT_VALUE,
                         f"{what} of {n} samples ({per_row} float64 values per sample)",
                         error=InputError)

    def _value_and_jacobian(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NumPy forward mode for any batch size (chunks of 1024 samples), else torch."""
        n, d = y.shape
        self._guard(n, self.n_out * (d + 1), "a Jacobian")
        if n == 0:
            return np.empty((0, self.n_out)), np.empty((0, self.n_out, d))
        if self._fast is None:
            return self._torch_values(y), self._torch_jacobian(y)
        if n <= 1024:
            return self._fast.value_and_jacobian(y)
        c, J = np.empty((n, self.n_out)), np.empty((n, self.n_out, d))
        for i in range(0, n, 1024):
            c[i:i + 1024], J[i:i + 1024] = self._fast.value_and_jacobian(y[i:i + 1024])
        return c, J

    # ------------------------------------------------------------------ public
    def __call__(self, y) -> np.ndarray:
        """Observables in physical units.

        Parameters
        ----------
        y : array_like, shape (n, n_in) or (n_in,)

        Returns
        -------
        numpy.ndarray, shape (n, n_out) or (n_out,), float64
        """
        single = np.ndim(y) == 1
        arr = self._check(y)
        self._guard(arr.shape[0], self.n_out, "a prediction")
        if self._fast is not None and arr.shape[0] <= self.fast_max_batch:
            c = self._fast.value(arr)
        else:
            c = self._torch_values(arr)
        return c[0] if single else c

    def jacobian(self, y) -> np.ndarray:
        """dc/dy by forward-mode automatic differentiation (the NumPy mirror's tangent rows for
        every batch size when it applies, else torch ``jvp`` per input direction).

        Returns
        -------
        numpy.ndarray, shape (n, n_out, n_in) (or (n_out, n_in) for a 1-D y)
        """
        single = np.ndim(y) == 1
        J = self._value_and_jacobian(self._check(y))[1]
        return J[0] if single else J

    def value_and_jacobian(self, y) -> tuple[np.ndarray, np.ndarray]:
        """``(model(y), model.jacobian(y))`` in one pass; shapes (n, m), (n, m, d)."""
        single = np.ndim(y) == 1
        c, J = self._value_and_jacobian(self._check(y))
        return (c[0], J[0]) if single else (c, J)

    def jvp(self, y, v) -> np.ndarray:
        """Jacobian-vector products J(y_i) v_i.

        Parameters
        ----------
        y : array_like, shape (n, n_in) or (n_in,)
        v : array_like, same shape as y (or one row, broadcast)

        Returns
        -------
        numpy.ndarray, shape (n, n_out) (or (n_out,))
        """
        single = np.ndim(y) == 1
        arr = self._check(y)
        V = self._check_vector(v, arr.shape[0], self.n_in, "v")
        n = arr.shape[0]
        self._guard(n, self.n_out, "a Jacobian-vector product")
        if n == 0:
            out = np.empty((0, self.n_out))
        elif self._fast is not None and n <= self.fast_max_batch:
            out = np.einsum("nmd,nd->nm", self._fast.value_and_jacobian(arr)[1], V)
        else:
            out = np.empty((n, self.n_out))
            for i in range(0, n, TORCH_BLOCK):
                jv = _locked_jvp(self._phys, self._tensor(arr[i:i + TORCH_BLOCK]),
                                 self._tensor(np.ascontiguousarray(V[i:i + TORCH_BLOCK])))
                out[i:i + TORCH_BLOCK] = jv.cpu().numpy()
        return out[0] if single else out

    def vjp(self, y, w) -> np.ndarray:
        """Vector-Jacobian products J(y_i)^T w_i (reverse mode on torch).

        Parameters
        ----------
        y : array_like, shape (n, n_in) or (n_in,)
        w : array_like, shape (n, n_out) or (n_out,) (one row is broadcast)

        Returns
        -------
        numpy.ndarray, shape (n, n_in) (or (n_in,))
        """
        single = np.ndim(y) == 1
        arr = self._check(y)
        Wv = self._check_vector(w, arr.shape[0], self.n_out, "w")
        n = arr.shape[0]
        self._guard(n, self.n_out + self.n_in, "a vector-Jacobian product")
        if n == 0:
            out = np.empty((0, self.n_in))
        elif self._fast is not None and n <= self.fast_max_batch:
            out = np.einsum("nmd,nm->nd", self._fast.value_and_jacobian(arr)[1], Wv)
        else:
            out = np.empty((n, self.n_in))
            for i in range(0, n, TORCH_BLOCK):
                pullback = torch.func.vjp(self._phys, self._tensor(arr[i:i + TORCH_BLOCK]))[1]
                (g,) = pullback(self._tensor(np.ascontiguousarray(Wv[i:i + TORCH_BLOCK])))
                out[i:i + TORCH_BLOCK] = g.detach().cpu().numpy()
        return out[0] if single else out

    @property
    def has_std(self) -> bool:
        """Whether :meth:`predict` can return a predictive std (ensembles only)."""
        return False

    def predict(self, y, return_std: bool = False) -> np.ndarray:
        """Observables in physical units, always by the torch network (the reference path,
        on ``device``; bitwise what training evaluated). :meth:`__call__` gives the same
        values up to round-off, faster for small batches.

        Parameters
        ----------
        y : array_like, shape (n, n_in) or (n_in,)
        return_std : bool
            Also return the predictive standard deviation: ensembles only
            (:class:`surrogate.ensemble.EnsembleSurrogate`); a single model raises ValueError.

        Returns
        -------
        numpy.ndarray, shape (n, n_out) or (n_out,), float64
        """
        if return_std:
            raise UsageError("predict(y, return_std=True): this surrogate is a single model "
                             "and has no predictive standard deviation; train an ensemble "
                             "with train-surrogate --ensemble K")
        single = np.ndim(y) == 1
        arr = self._check(y)
        self._guard(arr.shape[0], self.n_out, "a prediction")
        c = self._torch_values(arr)
        return c[0] if single else c

    def describe(self) -> dict:
        """Sizes, names and box as a JSON-serialisable dict."""
        return {"n_in": self.n_in, "n_out": self.n_out, "input_names": self.input_names,
                "lower": None if self.lower is None else self.lower.tolist(),
                "upper": None if self.upper is None else self.upper.tolist(),
                "problem": self.problem, "numpy_path": self.uses_numpy_path}

    def __repr__(self) -> str:
        return (f"SurrogateModel({self.problem}: {self.n_in} -> {self.n_out}, "
                f"box={'unknown' if self.lower is None else 'known'}, "
                f"numpy_path={self.uses_numpy_path})")


def load(model_dir: str | os.PathLike, device: str | torch.device = "cpu",
         strict: bool = False) -> SurrogateModel:
    """Load a surrogate saved by ``train-surrogate`` as a callable UQ model.

    Parameters
    ----------
    model_dir : path
        Directory with ``weights.npz`` and ``metadata.json`` (format version and SHA-256 are
        checked), or an ensemble directory (``train-surrogate --ensemble K``): then an
        :class:`surrogate.ensemble.EnsembleSurrogate` (``predict(y, return_std=True)``).
    device : str or torch.device
        Device of the torch path (large batches); small batches run NumPy on the CPU.
    strict : bool
        Inputs outside the training parameter box raise ValueError (default: a warning).

    Raises
    ------
    surrogate.artifact.SurrogateFormatError
        Missing, tampered or wrong-version model directory.
    """
    if is_ensemble(read_metadata(model_dir)):              # train-surrogate --ensemble K
        from surrogate.ensemble import load_ensemble

        return load_ensemble(model_dir, device=device, strict=strict)
    model, meta = load_model(model_dir, device=device)
    return SurrogateModel(model, meta, strict=strict)


def load_surrogate(directory: str | os.PathLike, device: str | torch.device = "cpu"
                   ) -> SurrogateModel:
    """Deprecated alias of :func:`load` (kept for one release; warns)."""
    warnings.warn("surrogate.load_surrogate is deprecated and will be removed in the next "
                  "release; use surrogate.load (same arguments, same model, .predict(y))",
                  FutureWarning, stacklevel=2)
    return load(directory, device=device)
