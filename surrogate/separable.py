"""Separable surrogate c = W [F(y, theta); 1] (SPEC section 4, GNvpro eq. 1.1)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from surrogate.encoding import PeriodicEncoding, build_encoding
from surrogate.neural_ode import NeuralODE
from surrogate.normalization import Normalizer
from surrogate.resnet import ResNet

#: a feature extractor F(y, theta): attributes ``n_in``, ``width``, ``n_steps``, ``K_in``, ...
FeatureExtractor = NeuralODE | ResNet

ARCHITECTURES: dict[str, type[FeatureExtractor]] = {"neural_ode": NeuralODE, "resnet": ResNet}


def build_extractor(config: dict, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> FeatureExtractor:
    """Feature extractor from its ``config()`` dictionary.

    Parameters
    ----------
    config : dict
        ``{"architecture": "neural_ode" | "resnet", "n_in", "width", "n_steps", ...}``.
    """
    config = dict(config)
    name = config.pop("architecture")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**config, generator=generator, dtype=dtype, device=device)


def augment(Z: torch.Tensor) -> torch.Tensor:
    """Features with the row of ones of the bias, [Z, 1] of shape (n, width + 1)."""
    return torch.cat([Z, torch.ones(Z.shape[0], 1, dtype=Z.dtype, device=Z.device)], dim=1)


class SeparableModel(nn.Module):
    """Separable model c_n = W [F(y_n, theta); 1] in normalised units.

    Parameters
    ----------
    features : NeuralODE or ResNet
        Feature extractor with attributes ``n_in``, ``width``.
    n_out : int
        Number of targets.
    normalizer : Normalizer, optional
        Input/target normalisation (identity if omitted); acts on the encoded inputs.
    encoding : PeriodicEncoding, optional
        Input encoding applied to the raw physical y before the normaliser
        (:mod:`surrogate.encoding`; attributes ``n_in``, ``n_out`` = ``features.n_in``).
        None is the identity.

    Attributes
    ----------
    W : Parameter, shape (n_out, width + 1)
        Linear weights; the last column is the bias.
    encoding : PeriodicEncoding or None
    """

    W: nn.Parameter
    features: FeatureExtractor
    normalizer: Normalizer
    encoding: PeriodicEncoding | None

    def __init__(self, features: FeatureExtractor, n_out: int,
                 normalizer: Normalizer | None = None,
                 encoding: PeriodicEncoding | None = None) -> None:
        super().__init__()
        if encoding is not None and encoding.n_out != features.n_in:
            raise ValueError(f"the encoding gives {encoding.n_out} inputs, the features take "
                             f"{features.n_in}")
        self.features = features
        self.encoding = encoding
        p = features.K_in
        self.W = nn.Parameter(torch.zeros(n_out, features.width + 1, dtype=p.dtype,
                                          device=p.device))
        if normalizer is None:
            normalizer = Normalizer(features.n_in, n_out, standardize_inputs=False)
        self.normalizer = normalizer.to(device=p.device)

    @property
    def n_out(self) -> int:
        return self.W.shape[0]

    @property
    def n_in(self) -> int:
        """Number of raw physical inputs (before the encoding)."""
        return self.encoding.n_in if self.encoding is not None else self.features.n_in

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        """Raw physical inputs -> normalised network inputs (encoding, then normaliser).

        Parameters
        ----------
        y : torch.Tensor, shape (n, n_in)

        Returns
        -------
        torch.Tensor, shape (n, features.n_in), dtype of the normaliser's buffers
        """
        y = y.to(dtype=self.normalizer.y_shift.dtype, device=self.normalizer.y_shift.device)
        if self.encoding is not None:
            y = self.encoding(y)
        return self.normalizer.transform_y(y)

    def forward(self, y_n: torch.Tensor) -> torch.Tensor:
        """Prediction in normalised units.

        Parameters
        ----------
        y_n : torch.Tensor, shape (n, n_in)
            Normalised inputs.

        Returns
        -------
        torch.Tensor, shape (n, n_out)
        """
        return augment(self.features(y_n)) @ self.W.T

    @torch.no_grad()
    def predict(self, y: np.ndarray) -> np.ndarray:
        """Prediction in physical units.

        Parameters
        ----------
        y : numpy.ndarray, shape (n, n_in)

        Returns
        -------
        numpy.ndarray, shape (n, n_out), float64
        """
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.n_in:
            raise ValueError(f"expected inputs of shape (n, {self.n_in}), got {y.shape}")
        p = self.W
        y_n = self.encode(torch.as_tensor(y, device=p.device)).to(p.dtype)
        c_n = self(y_n).to(self.normalizer.c_shift.dtype)
        return self.normalizer.inverse_c(c_n).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def prolong(self, n_steps: int) -> SeparableModel:
        """Copy with the feature extractor prolonged to ``n_steps`` steps (same W)."""
        new = SeparableModel(self.features.prolong(n_steps), self.n_out, self.normalizer,
                             self.encoding)
        new.W.copy_(self.W)
        return new

    @classmethod
    def from_config(cls, config: dict, device: torch.device | str = "cpu") -> SeparableModel:
        """Model with the architecture of ``config()`` (weights zero or random: load a state
        dict next)."""
        features = build_extractor(config["features"], dtype=getattr(torch, config["dtype"]),
                                   device=device)
        return cls(features, config["n_out"], Normalizer(**config["normalizer"]),
                   build_encoding(config.get("encoding"))).to(device)

    def config(self) -> dict:
        """Architecture settings (JSON-serialisable)."""
        return {"features": self.features.config(), "n_out": self.n_out,
                "normalizer": self.normalizer.config(),
                "encoding": None if self.encoding is None else self.encoding.config(),
                "dtype": str(self.W.dtype).removeprefix("torch.")}
