"""Loading a trained surrogate for prediction (needs only numpy and torch)."""

from __future__ import annotations

import os

import numpy as np
import torch

from surrogate.artifact import load_model


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
        """
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
