"""Input and target normalisation learned from the training split.

Inputs are standardised per feature, ``y_n = (y - y_shift) / y_scale``. Targets are mapped
by ``c_n = (c - c_shift) / c_scale`` with ``c_shift`` the training mean (when centring, as for
DCR, SPEC section 2) or zero, and one scalar ``c_scale`` (root mean square of the shifted
training targets), so that relative errors ``||c_pred - c|| / ||c - c_shift||`` are the same in
normalised and physical units and the relative weighting of the observables is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from surrogate.errors import NormalizationError


def _abs_max(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """max|x| along ``dim`` (kept as a size-1 axis; ``dim=None``: over all entries, shape ()),
    with zeros (and an empty ``x``) replaced by 1: the scale of :func:`_scaled_mean`."""
    if not x.numel():
        a = torch.zeros(())
    elif dim is None:
        a = x.abs().amax()
    else:
        a = x.abs().amax(dim=dim, keepdim=True)
    return torch.where(a > 0, a, torch.ones_like(a))


def _scaled_mean(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean that does not overflow: max|x| * mean(x / max|x|) (``dim=None``: all entries)."""
    a = _abs_max(x, dim)
    m = (x / a).mean(dim=dim, keepdim=dim is not None) * a
    return m.squeeze(dim) if dim is not None else m


def _scaled_rms(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Root mean square that does not overflow or underflow (same scaling as above)."""
    a = _abs_max(x, dim)
    r = torch.sqrt(((x / a) ** 2).mean(dim=dim, keepdim=dim is not None)) * a
    return r.squeeze(dim) if dim is not None else r


class Normalizer(nn.Module):
    """Affine maps of inputs and targets; all statistics are buffers (saved with the model).

    Parameters
    ----------
    n_in, n_out : int
        Numbers of input features and targets.
    standardize_inputs : bool
        Per-feature mean and standard deviation of the inputs (features with zero spread keep
        scale 1); otherwise inputs pass unchanged.
    center_targets : bool
        Subtract the training mean of the targets (DCR, SPEC section 2).
    dtype : torch.dtype
        Of the buffers.

    Attributes
    ----------
    y_shift, y_scale : buffer, shape (n_in,)
    c_shift : buffer, shape (n_out,)
    c_scale : buffer, shape ()
    """

    y_shift: torch.Tensor
    y_scale: torch.Tensor
    c_shift: torch.Tensor
    c_scale: torch.Tensor

    def __init__(self, n_in: int, n_out: int, *, standardize_inputs: bool = True,
                 center_targets: bool = False, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.standardize_inputs, self.center_targets = bool(standardize_inputs), bool(
            center_targets)
        self.register_buffer("y_shift", torch.zeros(n_in, dtype=dtype))
        self.register_buffer("y_scale", torch.ones(n_in, dtype=dtype))
        self.register_buffer("c_shift", torch.zeros(n_out, dtype=dtype))
        self.register_buffer("c_scale", torch.ones((), dtype=dtype))

    @torch.no_grad()
    def fit(self, y: torch.Tensor, c: torch.Tensor) -> Normalizer:
        """Learn the statistics from training data.

        Parameters
        ----------
        y : torch.Tensor, shape (n, n_in)
        c : torch.Tensor, shape (n, n_out)
        """
        y = y.to(self.y_shift)
        c = c.to(self.c_shift)
        if y.shape[0] == 0:
            raise NormalizationError("no training samples to fit the normalisation on")
        for name, x in (("inputs y", y), ("targets c", c)):
            if not torch.isfinite(x).all():
                raise NormalizationError(f"the training {name} contain NaN or inf")
        # statistics computed with max-abs scaling, so that data near the float64 limits
        # (e.g. targets of magnitude 1e300) give finite shifts and scales
        if self.standardize_inputs:
            mean = _scaled_mean(y, dim=0)
            std = _scaled_rms(y - mean, dim=0)
            self.y_shift.copy_(mean)
            self.y_scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        if self.center_targets:
            self.c_shift.copy_(_scaled_mean(c, dim=0))
        rms = _scaled_rms(c - self.c_shift)
        self.c_scale.copy_(rms if rms > 0 else torch.ones_like(rms))
        bad = self.nonfinite()
        if bad:
            raise NormalizationError(
                f"normalisation statistics are not finite ({'; '.join(bad)}): the training "
                "data span more than the float64 range; rescale the data")
        return self

    def nonfinite(self) -> list[str]:
        """Descriptions of the statistics that are not finite or (scales) not positive."""
        bad = []
        for name, what in (("y_shift", "input mean"), ("y_scale", "input scale"),
                           ("c_shift", "target shift"), ("c_scale", "target scale")):
            t = getattr(self, name)
            ok = torch.isfinite(t) & (t > 0) if name.endswith("scale") else torch.isfinite(t)
            if not bool(ok.all()):
                first = t.reshape(-1)[~ok.reshape(-1)][0].item()
                bad.append(f"{name} ({what}) = {first}")
        return bad

    def transform_y(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised inputs, shape (n, n_in)."""
        return (y - self.y_shift) / self.y_scale

    def transform_c(self, c: torch.Tensor) -> torch.Tensor:
        """Normalised targets, shape (n, n_out)."""
        return (c - self.c_shift) / self.c_scale

    def inverse_c(self, c_n: torch.Tensor) -> torch.Tensor:
        """Targets in physical units from normalised ones, shape (n, n_out)."""
        return c_n * self.c_scale + self.c_shift

    def config(self) -> dict:
        """Settings that rebuild this module (the statistics are in the weights file)."""
        return {"n_in": self.n_in, "n_out": self.n_out,
                "standardize_inputs": self.standardize_inputs,
                "center_targets": self.center_targets}
