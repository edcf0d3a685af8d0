"""Ensembles of independently seeded surrogates: predictive uncertainty (issue 19).

::

    import surrogate
    model = surrogate.load("ensemble_dir")           # the same call as for one model
    mean = model(y)                                  # (n, m): the members' mean
    mean, std = model.predict(y, return_std=True)    # (n, m) each, physical units
    J = model.jacobian(y)                            # (n, m, d): Jacobian of the mean

Directory layout (written by ``train-surrogate --ensemble K``)::

    metadata.json        format version 2: members, calibration factor, training provenance
    members/0 ... K-1/   each a complete single-model directory (weights.npz, metadata.json,
                         history.csv, ...), loadable on its own
    summary.json/.txt    errors of the mean and of each member, calibration

The mean is ``c(y) = (1/K) sum_k c_k(y)``; the predictive standard deviation is
``std(y) = s * sqrt(sum_k (c_k(y) - c(y))^2 / (K - ddof))`` (ddof = 1), computed from the
pairwise differences ``sum_k (c_k - c)^2 = (1/K) sum_{k<l} (c_k - c_l)^2`` so that identical
members give exactly zero. The factor ``s`` (``std_scale``) is fitted on the validation split
at training time (:func:`surrogate.uncertainty.fit_std_scale`). Loading checks the SHA-256 of
every member's ``metadata.json`` against the ensemble's, and each member checks its weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from solvers.common.atomic import sha256_file
from surrogate.artifact import load_model
from surrogate.errors import SurrogateFormatError
from surrogate.metadata import METADATA_FILE, ensemble_entry, is_ensemble, read_metadata
from surrogate.separable import SeparableModel
from surrogate.uq_model import SurrogateModel

__all__ = ["MEMBERS_DIR", "EnsembleSurrogate", "SeparableEnsemble", "load_ensemble",
           "member_spread"]

#: sub-folder of the members
MEMBERS_DIR = "members"


def member_spread(values: np.ndarray, ddof: int = 1) -> np.ndarray:
    """Standard deviation over the first axis, ``sqrt(sum_k (x_k - mean)^2 / (K - ddof))``,
    from pairwise differences (exactly 0 for identical members).

    Parameters
    ----------
    values : numpy.ndarray, shape (K, ...)
    ddof : int

    Returns
    -------
    numpy.ndarray, shape values.shape[1:]
    """
    K = values.shape[0]
    if K - ddof < 1:
        raise ValueError(f"a spread of {K} member(s) needs K > ddof = {ddof}")
    ss = np.zeros(values.shape[1:], dtype=np.float64)
    for k in range(K - 1):
        d = values[k + 1:] - values[k]
        ss += np.einsum("k...,k...->...", d, d)
    return np.sqrt(ss / (K * (K - ddof)))


class SeparableEnsemble(nn.Module):
    """The members' torch models; ``predict`` is the mean (the ``torch_model`` of an
    :class:`EnsembleSurrogate`, so code that calls ``torch_model.predict`` or reads
    ``torch_model.normalizer`` works for both).

    Parameters
    ----------
    members : list of SeparableModel
        Same inputs, outputs and normalisation (trained on the same data).
    """

    def __init__(self, members: list[SeparableModel]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def _first(self) -> SeparableModel:
        first = self.members[0]
        assert isinstance(first, SeparableModel)
        return first

    @property
    def n_in(self) -> int:
        return self._first().n_in

    @property
    def n_out(self) -> int:
        return self._first().n_out

    @property
    def normalizer(self) -> Any:
        """Member 0's normaliser (equal statistics in every member: same training data)."""
        return self._first().normalizer

    @property
    def encoding(self) -> Any:
        return self._first().encoding

    @property
    def W(self) -> torch.Tensor:
        """Member 0's W (device and dtype of the ensemble)."""
        return self._first().W

    def models(self) -> list[SeparableModel]:
        """The members as a list."""
        return [m for m in self.members if isinstance(m, SeparableModel)]

    @torch.no_grad()
    def predict_members(self, y: np.ndarray) -> np.ndarray:
        """Each member's prediction, shape (K, n, n_out), physical units."""
        return np.stack([m.predict(y) for m in self.models()])

    @torch.no_grad()
    def predict(self, y: np.ndarray) -> np.ndarray:
        """The members' mean, shape (n, n_out), physical units."""
        return self.predict_members(y).mean(axis=0)


class EnsembleSurrogate(SurrogateModel):
    """K surrogates as one: the mean, its Jacobians, and a calibrated spread. Build with
    :func:`surrogate.load` (or :func:`load_ensemble`).

    Parameters
    ----------
    members : list of SurrogateModel
    metadata : dict
        The ensemble's ``metadata.json``.
    strict : bool
        Inputs outside the training box raise ValueError instead of warning.
    std_scale : float
        Calibration factor of the spread.
    ddof : int
        Delta degrees of freedom of the spread.

    Attributes
    ----------
    members : list of SurrogateModel
    std_scale : float
    ddof : int
    """

    def __init__(self, members: list[SurrogateModel], metadata: dict, *, strict: bool = False,
                 std_scale: float = 1.0, ddof: int = 1) -> None:
        if len(members) - ddof < 1:
            raise SurrogateFormatError(f"an ensemble needs more than {ddof} member(s), got "
                                       f"{len(members)}")
        super().__init__(members[0].torch_model, metadata, strict=strict,
                         fast_max_batch=members[0].fast_max_batch)
        sizes = {(m.n_in, m.n_out) for m in members}
        if len(sizes) != 1:
            raise SurrogateFormatError(f"the ensemble's members map different sizes: {sizes}")
        self.members = members
        for m in members:               # the box is checked once, by the ensemble
            m.lower = m.upper = None
        self.torch_model = SeparableEnsemble([m.torch_model for m in members]).eval()
        self.std_scale = float(std_scale)
        self.ddof = int(ddof)

    @property
    def has_std(self) -> bool:
        return True

    @property
    def member_models(self) -> list[SeparableModel]:
        """The members' torch models (for export)."""
        return [m.torch_model for m in self.members]

    def __call__(self, y) -> np.ndarray:
        """The members' mean (see :meth:`SurrogateModel.__call__`), shape (n, n_out) or
        (n_out,)."""
        single = np.ndim(y) == 1
        arr = self._check(y)
        c = np.mean([m(arr) for m in self.members], axis=0)
        return c[0] if single else c

    def predict_members(self, y) -> np.ndarray:
        """Every member's prediction (torch path), shape (K, n, n_out) (or (K, n_out))."""
        P = self._members_torch(self._check(y))
        return P[:, 0] if np.ndim(y) == 1 else P

    def _members_torch(self, arr: np.ndarray) -> np.ndarray:
        """(K, n, n_out) predictions of the members' torch models (``arr`` checked)."""
        return np.stack([m.predict(arr) for m in self.members])

    def predict(self, y, return_std: bool = False):
        """The mean (torch path) and, with ``return_std``, the calibrated predictive standard
        deviation ``std_scale * spread`` (scikit-learn's convention).

        Parameters
        ----------
        y : array_like, shape (n, n_in) or (n_in,)
        return_std : bool

        Returns
        -------
        mean : numpy.ndarray, shape (n, n_out) or (n_out,), physical units
        std : numpy.ndarray, same shape, physical units (only with ``return_std``)
        """
        single = np.ndim(y) == 1
        P = self._members_torch(self._check(y))
        mean = P.mean(axis=0)
        if not return_std:
            return mean[0] if single else mean
        std = self.std_scale * member_spread(P, self.ddof)
        return (mean[0], std[0]) if single else (mean, std)

    def _value_and_jacobian(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [m.value_and_jacobian(y) for m in self.members]
        return (np.mean([p[0] for p in parts], axis=0), np.mean([p[1] for p in parts], axis=0))

    def jvp(self, y, v) -> np.ndarray:
        """J(y_i) v_i of the mean, shape (n, n_out) (or (n_out,))."""
        single = np.ndim(y) == 1
        arr = self._check(y)
        out = np.mean([m.jvp(arr, v) for m in self.members], axis=0)
        return out[0] if single else out

    def vjp(self, y, w) -> np.ndarray:
        """J(y_i)^T w_i of the mean, shape (n, n_in) (or (n_in,))."""
        single = np.ndim(y) == 1
        arr = self._check(y)
        out = np.mean([m.vjp(arr, w) for m in self.members], axis=0)
        return out[0] if single else out

    def describe(self) -> dict:
        return {**super().describe(), "ensemble_size": len(self.members),
                "std_scale": self.std_scale}

    def __repr__(self) -> str:
        return (f"EnsembleSurrogate({self.problem}: {self.n_in} -> {self.n_out}, "
                f"{len(self.members)} members, std_scale={self.std_scale:.4g}, "
                f"box={'unknown' if self.lower is None else 'known'})")


def load_ensemble(directory: str | os.PathLike, device: str | torch.device = "cpu",
                  strict: bool = False) -> EnsembleSurrogate:
    """Load an ensemble directory (see the module docstring).

    Raises
    ------
    SurrogateFormatError
        Not an ensemble, a member missing or modified (SHA-256 of its metadata.json), members
        of different sizes.
    """
    directory = Path(directory)
    meta = read_metadata(directory)
    if not is_ensemble(meta):
        raise SurrogateFormatError(f"{directory}: not an ensemble directory")
    entry = ensemble_entry(meta)
    members = []
    for k, info in enumerate(entry["members"]):
        sub = directory / info["path"]
        mfile = sub / METADATA_FILE
        if not mfile.is_file():
            raise SurrogateFormatError(f"{directory}: ensemble member {k} ({info['path']}) is "
                                       "missing")
        if sha256_file(mfile) != info["metadata_sha256"]:
            raise SurrogateFormatError(
                f"{mfile}: SHA-256 does not match the ensemble's metadata.json; the member was "
                "modified or replaced")
        model, member_meta = load_model(sub, device=device)
        members.append(SurrogateModel(model, member_meta))
    return EnsembleSurrogate(members, meta, strict=strict,
                             std_scale=float(entry.get("std_scale", 1.0)),
                             ddof=int(entry.get("ddof", 1)))
