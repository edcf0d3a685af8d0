"""Input and target normalisation learned from the training split.

Inputs are standardised per feature, ``y_n = (y - y_shift) / y_scale``. Targets are mapped
by ``c_n = (c - c_shift) / c_scale`` with ``c_shift`` the training mean (when centring, as for
DCR, SPEC section 2) or zero, and

- ``scale_targets="global"`` (the default, SPEC problems): one scalar ``c_scale`` (root mean
  square of the shifted training targets), so that relative errors
  ``||c_pred - c|| / ||c - c_shift||`` are the same in normalised and physical units and the
  relative weighting of the observables is unchanged;
- ``scale_targets="per_output"`` (issue 18, foreign data whose outputs have very different
  scales): ``c_scale`` of shape (n_out,), the training standard deviation of each output, so
  that every output weighs the same in the least-squares loss. Outputs whose spread is at
  most :data:`CONSTANT_RTOL` times the largest keep the largest scale (never magnified).
  The map stays affine and exactly invertible, so predictions in physical units are
  ``inverse_c(c_n) = c_n * c_scale + c_shift`` as before.
"""

from __future__ import annotations

import torch
from torch import nn

from surrogate.errors import NormalizationError

#: how the targets are scaled (see the module docstring)
TARGET_SCALINGS = ("global", "per_output")
#: per-output scaling: outputs with a standard deviation at most this fraction of the largest
#: one count as constant
CONSTANT_RTOL = 1e-8


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
    scale_targets : "global" or "per_output"
        One scalar target scale, or one per output (module docstring).
    dtype : torch.dtype
        Of the buffers.

    Attributes
    ----------
    y_shift, y_scale : buffer, shape (n_in,)
    c_shift : buffer, shape (n_out,)
    c_scale : buffer, shape () (global) or (n_out,) (per output)
    """

    y_shift: torch.Tensor
    y_scale: torch.Tensor
    c_shift: torch.Tensor
    c_scale: torch.Tensor

    def __init__(self, n_in: int, n_out: int, *, standardize_inputs: bool = True,
                 center_targets: bool = False, scale_targets: str = "global",
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if scale_targets not in TARGET_SCALINGS:
            raise ValueError(f"scale_targets must be one of {TARGET_SCALINGS}, got "
                             f"{scale_targets!r}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.standardize_inputs, self.center_targets = bool(standardize_inputs), bool(
            center_targets)
        self.scale_targets = scale_targets
        self.register_buffer("y_shift", torch.zeros(n_in, dtype=dtype))
        self.register_buffer("y_scale", torch.ones(n_in, dtype=dtype))
        self.register_buffer("c_shift", torch.zeros(n_out, dtype=dtype))
        self.register_buffer("c_scale", torch.ones(
            (n_out,) if scale_targets == "per_output" else (), dtype=dtype))

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
        if self.scale_targets == "per_output":
            self.c_scale.copy_(per_output_scales(c))
        else:
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
        """Settings that rebuild this module (the statistics are in the weights file);
        ``scale_targets`` only when per output, so global models keep their old metadata."""
        cfg: dict = {"n_in": self.n_in, "n_out": self.n_out,
                     "standardize_inputs": self.standardize_inputs,
                     "center_targets": self.center_targets}
        if self.scale_targets != "global":
            cfg["scale_targets"] = self.scale_targets
        return cfg


def per_output_scales(c: torch.Tensor) -> torch.Tensor:
    """Training standard deviation of each output, constant outputs at the largest one.

    Parameters
    ----------
    c : torch.Tensor, shape (n, n_out)

    Returns
    -------
    torch.Tensor, shape (n_out,)
        Positive; 1 everywhere when no output varies.
    """
    std = _scaled_rms(c - _scaled_mean(c, dim=0), dim=0)
    top = std.max() if std.numel() else torch.zeros((), dtype=c.dtype)
    if not top > 0:
        return torch.ones_like(std)
    return torch.where(std > CONSTANT_RTOL * top, std, top)
