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
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from solvers.common.validation import check_batch
from surrogate.artifact import load_model
from surrogate.metadata import io_entries, parameter_box
from surrogate.numpy_forward import build_numpy_forward


class OutOfBoxWarning(UserWarning):
    """An input lies outside the training parameter box (the surrogate extrapolates)."""


#: the input validator of every prediction entry point (see :mod:`solvers.common.validation`)
check_inputs = check_batch


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
        Y = self._tensor(np.repeat(y, d, axis=0))                       # (n d, d)
        E = self._tensor(np.tile(np.eye(d), (n, 1)))
        jv = torch.func.jvp(self._phys, (Y,), (E,))[1]                  # (n d, m)
        J = jv.reshape(n, d, -1).transpose(1, 2)
        return J.detach().cpu().numpy().astype(np.float64)

    def _value_and_jacobian(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NumPy forward mode for any batch size (chunks of 1024 samples), else torch."""
        if self._fast is None:
            return self.torch_model.predict(y), self._torch_jacobian(y)
        if y.shape[0] <= 1024:
            return self._fast.value_and_jacobian(y)
        parts = [self._fast.value_and_jacobian(y[i:i + 1024]) for i in range(0, len(y), 1024)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

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
        if self._fast is not None and arr.shape[0] <= self.fast_max_batch:
            c = self._fast.value(arr)
        else:
            c = self.torch_model.predict(arr)
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
        if self._fast is not None and arr.shape[0] <= self.fast_max_batch:
            out = np.einsum("nmd,nd->nm", self._fast.value_and_jacobian(arr)[1], V)
        else:
            jv = torch.func.jvp(self._phys, (self._tensor(arr),), (self._tensor(V),))[1]
            out = jv.detach().cpu().numpy().astype(np.float64)
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
        if self._fast is not None and arr.shape[0] <= self.fast_max_batch:
            out = np.einsum("nmd,nm->nd", self._fast.value_and_jacobian(arr)[1], Wv)
        else:
            pullback = torch.func.vjp(self._phys, self._tensor(arr))[1]
            (g,) = pullback(self._tensor(np.ascontiguousarray(Wv)))
            out = g.detach().cpu().numpy().astype(np.float64)
        return out[0] if single else out

    def predict(self, y) -> np.ndarray:
        """Observables in physical units, always by the torch network (the reference path,
        on ``device``; bitwise what training evaluated). :meth:`__call__` gives the same
        values up to round-off, faster for small batches.

        Parameters
        ----------
        y : array_like, shape (n, n_in) or (n_in,)

        Returns
        -------
        numpy.ndarray, shape (n, n_out) or (n_out,), float64
        """
        single = np.ndim(y) == 1
        c = self.torch_model.predict(self._check(y))
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
        checked).
    device : str or torch.device
        Device of the torch path (large batches); small batches run NumPy on the CPU.
    strict : bool
        Inputs outside the training parameter box raise ValueError (default: a warning).

    Raises
    ------
    surrogate.artifact.SurrogateFormatError
        Missing, tampered or wrong-version model directory.
    """
    model, meta = load_model(model_dir, device=device)
    return SurrogateModel(model, meta, strict=strict)


def load_surrogate(directory: str | os.PathLike, device: str | torch.device = "cpu"
                   ) -> SurrogateModel:
    """Deprecated alias of :func:`load` (kept for one release; warns)."""
    warnings.warn("surrogate.load_surrogate is deprecated and will be removed in the next "
                  "release; use surrogate.load (same arguments, same model, .predict(y))",
                  FutureWarning, stacklevel=2)
    return load(directory, device=device)
