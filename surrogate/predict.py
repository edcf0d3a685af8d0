"""Loading a trained surrogate for prediction (needs only numpy and torch)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from surrogate.artifact import load_model
from surrogate.uq_model import OutOfBoxWarning, _io_metadata, check_inputs


class Surrogate:
    """A trained separable surrogate read from a model directory.

    Attributes
    ----------
    model : SeparableModel
    metadata : dict
        Contents of ``metadata.json``.
    """

    def __init__(self, model, metadata: dict) -> None:
        self.model = model.eval()
        self.metadata = metadata
        inputs = _io_metadata(metadata)[0] or {}
        self.lower = np.asarray(inputs["lower"], float) if "lower" in inputs else None
        self.upper = np.asarray(inputs["upper"], float) if "upper" in inputs else None

    @property
    def n_in(self) -> int:
        return self.model.n_in

    @property
    def n_out(self) -> int:
        return self.model.n_out

    def predict(self, y: np.ndarray) -> np.ndarray:
        """Observables in physical units.

        Parameters
        ----------
        y : numpy.ndarray, shape (n, n_in)

        Returns
        -------
        numpy.ndarray, shape (n, n_out)

        Raises
        ------
        ValueError
            Wrong shape or dtype, NaN or inf (naming the entry). Inputs outside the training
            box recorded in the metadata give an :class:`~surrogate.uq_model.OutOfBoxWarning`.
        """
        if np.ndim(y) != 2:
            raise ValueError(f"expected inputs of shape (n, {self.n_in}), got {np.shape(y)}")
        y = check_inputs(y, self.n_in)
        if self.lower is not None and ((y < self.lower) | (y > self.upper)).any():
            i, k = np.argwhere((y < self.lower) | (y > self.upper))[0]
            warnings.warn(f"y[{i}, {k}] = {y[i, k]:.6g} is outside the training box "
                          f"[{self.lower[k]:.6g}, {self.upper[k]:.6g}]; the surrogate "
                          "extrapolates there", OutOfBoxWarning, stacklevel=2)
        return self.model.predict(y)


def load_surrogate(directory: str | os.PathLike, device: str | torch.device = "cpu"
                   ) -> Surrogate:
    """Load ``directory`` (``weights.npz`` + ``metadata.json``), verifying version and SHA-256.

    Raises
    ------
    surrogate.artifact.SurrogateFormatError
        For a missing, tampered or wrong-version model directory.
    """
    model, meta = load_model(directory, device=device)
    return Surrogate(model, meta)
