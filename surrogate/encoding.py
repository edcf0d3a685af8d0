"""Problem-declared input encodings, part of the saved surrogate (applied before the normaliser).

A periodic parameter (DCR: the orientation angle y3 of the ellipsoid; the conductivity is
pi-periodic in it, SPEC section 2) is seen by a plain network as a number on an interval, so
the network has to learn that both ends are the same physics. :class:`PeriodicEncoding`
replaces each periodic column y_k of period P_k by the pair

    (cos(2 pi y_k / P_k), sin(2 pi y_k / P_k)),

which is exactly P_k-periodic, and passes the other columns unchanged. The encoding is a
module of :class:`surrogate.separable.SeparableModel` (``model.encoding``) and its settings are
written to the artifact, so users always pass the raw physical y.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


class PeriodicEncoding(nn.Module):
    """Encode periodic input columns as (cos, sin) pairs, other columns unchanged.

    Parameters
    ----------
    n_in : int
        Number of raw input parameters.
    periods : mapping int -> float
        Column index (0-based) -> period P_k > 0, in the units of that column.

    Attributes
    ----------
    n_in : int
        Raw inputs.
    n_out : int
        Encoded inputs, ``n_in + len(periods)``. Output column order: the raw columns in their
        order, each periodic one replaced in place by its (cos, sin) pair.
    """

    kind = "periodic"

    def __init__(self, n_in: int, periods: Mapping[int, float]) -> None:
        super().__init__()
        self.n_in = int(n_in)
        if self.n_in < 1:
            raise ValueError(f"n_in must be positive, got {n_in}")
        clean: dict[int, float] = {}
        for k, p in periods.items():
            k_int = int(k)
            if not 0 <= k_int < self.n_in:
                raise ValueError(f"periodic input index {k} is outside 0..{self.n_in - 1}")
            if not (isinstance(p, int | float) and math.isfinite(p) and p > 0):
                raise ValueError(f"period of input {k} must be a positive number, got {p!r}")
            clean[k_int] = float(p)
        self.periods = dict(sorted(clean.items()))
        self.n_out = self.n_in + len(self.periods)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Encoded inputs.

        Parameters
        ----------
        y : torch.Tensor, shape (n, n_in)
            Raw physical inputs.

        Returns
        -------
        torch.Tensor, shape (n, n_out), dtype of ``y``
        """
        if y.dim() != 2 or y.shape[1] != self.n_in:
            raise ValueError(f"expected inputs of shape (n, {self.n_in}), got {tuple(y.shape)}")
        cols: list[torch.Tensor] = []
        for j in range(self.n_in):
            if j in self.periods:
                phase = y[:, j] * (2.0 * math.pi / self.periods[j])
                cols.extend((torch.cos(phase), torch.sin(phase)))
            else:
                cols.append(y[:, j])
        return torch.stack(cols, dim=1)

    def config(self) -> dict:
        """JSON-serialisable settings that rebuild this module (see :func:`build_encoding`)."""
        return {"kind": self.kind, "n_in": self.n_in,
                "periods": {str(k): p for k, p in self.periods.items()}}


ENCODINGS: dict[str, type[PeriodicEncoding]] = {"periodic": PeriodicEncoding}


def build_encoding(config: Mapping | None) -> PeriodicEncoding | None:
    """Encoding module from its ``config()`` dictionary; None (identity) for None.

    Raises
    ------
    ValueError
        Unknown kind or invalid settings.
    """
    if config is None:
        return None
    kind = config.get("kind")
    if kind not in ENCODINGS:
        raise ValueError(f"unknown input encoding {kind!r}; known: {sorted(ENCODINGS)}")
    return PeriodicEncoding(int(config["n_in"]), {int(k): float(v) for k, v in
                                                  dict(config["periods"]).items()})


def periodic_encoding(n_in: int, periods: Mapping[int | str, float] | None
                      ) -> PeriodicEncoding | None:
    """A :class:`PeriodicEncoding`, or None when ``periods`` is empty."""
    if not periods:
        return None
    return PeriodicEncoding(n_in, {int(k): v for k, v in periods.items()})
