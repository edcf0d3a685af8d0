"""NumPy mirror of a separable surrogate's forward pass, for small batches (MCMC, UM-Bridge).

A torch call on one sample costs a few hundred microseconds of dispatcher overhead; the
networks themselves are tiny (width 8-16, 2-8 steps). This module re-implements the exact
forward pass of :class:`~surrogate.separable.SeparableModel` with a
:class:`~surrogate.neural_ode.NeuralODE` (RK4, GNvpro eq. 3.1) or
:class:`~surrogate.resnet.ResNet` (slimTrain eq. B.1-B.2) feature extractor in float64 NumPy,
with preallocated-free, in-place operations, and its forward-mode derivative (the tangents
``dU/dy`` travel as extra rows next to the state, so a Jacobian costs about 1.7 forward
passes).

Folding
-------
The input normalisation ``y_n = (y - y_shift) / y_scale`` is folded into the opening layer
(``K_in' = K_in / y_scale``, ``b_in' = b_in - K_in' y_shift``) and the target map
``c = c_n c_scale + c_shift`` (c_scale a scalar or one per output) into ``W``; biases are
appended as an extra row of each layer matrix, multiplied by a constant 1 carried in an extra
column of the state (0 in the tangent rows). Results agree with the torch forward pass to
round-off (tested).

:func:`build_numpy_forward` returns None for anything it does not mirror exactly (another
architecture, a non-float64 network, an input encoding other than
:class:`~surrogate.encoding.PeriodicEncoding`): callers then use torch. A periodic encoding is
applied in NumPy before the network, and its derivative chained onto the Jacobian.
"""

from __future__ import annotations

import numpy as np

from surrogate.encoding import PeriodicEncoding
from surrogate.neural_ode import NeuralODE
from surrogate.resnet import ResNet


def _aug(matrix_t: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Layer matrix with the bias as last row: x_aug @ result = x @ matrix_t + bias.

    Parameters
    ----------
    matrix_t : (w_in, w_out)
    bias : (w_out,)

    Returns
    -------
    numpy.ndarray, shape (w_in + 1, w_out), C-contiguous
    """
    return np.ascontiguousarray(np.vstack([matrix_t, bias[None, :]]))


class NumpyForward:
    """Forward pass and forward-mode Jacobian of a float64 separable surrogate in NumPy.

    Build with :func:`build_numpy_forward`.

    Attributes
    ----------
    n_in, n_out, width : int
    architecture : "neural_ode" or "resnet"
    """

    def __init__(self, architecture: str, k_in: np.ndarray, b_in: np.ndarray,
                 layers: list, h: float, w_out: np.ndarray, c_out: np.ndarray) -> None:
        self.architecture = architecture
        self.width = k_in.shape[0]
        self.n_in = k_in.shape[1]
        self.n_out = w_out.shape[0]
        self._kin_t = np.ascontiguousarray(k_in.T)          # (d, w)
        self._kin_aug = _aug(k_in.T, b_in)                  # (d + 1, w)
        self._layers = layers
        self._h = float(h)
        self._w_t = np.ascontiguousarray(w_out.T)           # (w, m)
        self._c0 = np.ascontiguousarray(c_out)              # (m,)
        self._coef = np.array([1.0, 2.0, 2.0, 1.0]) * (self._h / 6.0)

    # ------------------------------------------------------------------ public
    def value(self, y: np.ndarray) -> np.ndarray:
        """Observables c(y) in physical units.

        Parameters
        ----------
        y : numpy.ndarray, shape (n, n_in), float64, validated by the caller

        Returns
        -------
        numpy.ndarray, shape (n, n_out)
        """
        X = self._opening(y, tangents=False)
        X = self._features(X, tangents=False)
        c = np.dot(X[:, 0, :self.width], self._w_t)
        c += self._c0
        return c

    def value_and_jacobian(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Observables and their Jacobian dc/dy (forward mode).

        Parameters
        ----------
        y : numpy.ndarray, shape (n, n_in), float64

        Returns
        -------
        c : numpy.ndarray, shape (n, n_out)
        J : numpy.ndarray, shape (n, n_out, n_in)
        """
        X = self._opening(y, tangents=True)
        X = self._features(X, tangents=True)
        n, r, w1 = X.shape
        out = np.dot(X.reshape(n * r, w1)[:, :self.width], self._w_t).reshape(n, r, -1)
        c = out[:, 0, :]
        c += self._c0
        return c, out[:, 1:, :].transpose(0, 2, 1)

    # ------------------------------------------------------------------ internals
    def _opening(self, y: np.ndarray, tangents: bool) -> np.ndarray:
        """State rows X (n, r, w + 1): row 0 = [u_0, 1], rows 1..d = [du_0/dy_k, 0]."""
        n, d, w = y.shape[0], self.n_in, self.width
        r = 1 + d if tangents else 1
        X = np.zeros((n, r, w + 1))
        u = X[:, 0, :w]
        u[...] = np.dot(y, self._kin_aug[:d])
        u += self._kin_aug[d]
        np.tanh(u, out=u)
        X[:, 0, w] = 1.0
        if tangents:
            s = 1.0 - u * u                                   # (n, w)
            np.multiply(s[:, None, :], self._kin_t[None, :, :], out=X[:, 1:, :w])
        return X

    def _features(self, X: np.ndarray, tangents: bool) -> np.ndarray:
        if self.architecture == "resnet":
            return self._resnet(X, tangents)
        return self._rk4(X, tangents)

    def _resnet(self, X: np.ndarray, tangents: bool) -> np.ndarray:
        n, r, w1 = X.shape
        w = w1 - 1
        X2 = X.reshape(n * r, w1)                # rows share each layer matrix: one 2-D dot
        Z = np.empty((n, r, w))
        Z2 = Z.reshape(n * r, w)
        Z0 = Z[:, 0, :]
        Zt = Z[:, 1:, :]
        S = np.empty((n, 1, w))
        Xw = X2[:, :w]
        h = self._h
        for Kaug in self._layers:
            np.dot(X2, Kaug, out=Z2)
            np.tanh(Z0, out=Z0)
            if tangents:
                np.multiply(Z0[:, None, :], Z0[:, None, :], out=S)
                np.subtract(1.0, S, out=S)
                Zt *= S
            Z2 *= h
            Xw += Z2
        return X

    def _rk4(self, X: np.ndarray, tangents: bool) -> np.ndarray:
        n, r, w1 = X.shape
        w = w1 - 1
        R = n * r
        X2 = X.reshape(R, w1)
        KS = np.zeros((4, n, r, w1))             # stage slopes, augmented column stays 0
        KS2 = [KS[i].reshape(R, w1) for i in range(4)]
        KS_flat = KS.reshape(4, -1)
        X_flat = X.reshape(-1)
        acc = np.empty(X_flat.shape)
        T = np.empty((R, w1))
        Z = np.empty((n, r, w))
        Z2 = Z.reshape(R, w)
        Z0 = Z[:, 0, :]
        Zt = Z[:, 1:, :]
        S = np.empty((n, 1, w))
        S0 = S[:, 0, :]
        Kv = [KS[i, :, 0, :w] for i in range(4)]
        Kt = [KS[i, :, 1:, :w] for i in range(4)]
        half = 0.5 * self._h
        coef = self._coef
        dot, tanh, multiply, subtract = np.dot, np.tanh, np.multiply, np.subtract
        for A0, Am, A1 in self._layers:
            for i, Aaug, a in ((0, A0, 0.0), (1, Am, half), (2, Am, half), (3, A1, self._h)):
                if i == 0:
                    dot(X2, Aaug, out=Z2)
                else:
                    multiply(KS2[i - 1], a, out=T)
                    T += X2
                    dot(T, Aaug, out=Z2)
                kv = Kv[i]
                tanh(Z0, out=kv)
                if tangents:
                    multiply(kv, kv, out=S0)
                    subtract(1.0, S0, out=S0)
                    multiply(Zt, S, out=Kt[i])
            dot(coef, KS_flat, out=acc)
            X_flat += acc
        return X


def build_numpy_forward(model) -> NumpyForward | PeriodicNumpyForward | None:
    """NumPy mirror of ``model`` (a SeparableModel), or None if it cannot be mirrored exactly.

    Mirrored: float64 weights, a NeuralODE or ResNet extractor (exact types), no input
    encoding or a :class:`~surrogate.encoding.PeriodicEncoding`.
    """
    enc = getattr(model, "encoding", None)
    if enc is None:
        return _build_network(model)
    if type(enc) is not PeriodicEncoding:
        return None
    inner = _build_network(model)
    return None if inner is None else PeriodicNumpyForward(inner, enc.n_in, enc.periods)


class PeriodicNumpyForward:
    """A :class:`NumpyForward` behind a periodic input encoding: each periodic column y_k of
    period P_k is replaced in place by (cos(w_k y_k), sin(w_k y_k)), w_k = 2 pi / P_k, as in
    :class:`~surrogate.encoding.PeriodicEncoding`; Jacobians get the chain-rule factor."""

    def __init__(self, inner: NumpyForward, n_in: int, periods: dict[int, float]) -> None:
        self.inner, self.n_in, self.n_out = inner, int(n_in), inner.n_out
        self.architecture, self.width = inner.architecture, inner.width
        self._cols = []                     # (raw column, encoded column, omega or None)
        e = 0
        for k in range(self.n_in):
            omega = 2.0 * np.pi / periods[k] if k in periods else None
            self._cols.append((k, e, omega))
            e += 1 if omega is None else 2

    def _encode(self, y: np.ndarray, derivative: bool):
        n = y.shape[0]
        z = np.empty((n, self.inner.n_in))
        dz = np.zeros((n, self.inner.n_in, self.n_in)) if derivative else None
        for k, e, omega in self._cols:
            if omega is None:
                z[:, e] = y[:, k]
                if dz is not None:
                    dz[:, e, k] = 1.0
            else:
                phase = omega * y[:, k]
                z[:, e], z[:, e + 1] = np.cos(phase), np.sin(phase)
                if dz is not None:
                    dz[:, e, k], dz[:, e + 1, k] = -omega * z[:, e + 1], omega * z[:, e]
        return z, dz

    def value(self, y: np.ndarray) -> np.ndarray:
        """Observables c(y), shape (n, n_out), for raw y of shape (n, n_in)."""
        return self.inner.value(self._encode(y, False)[0])

    def value_and_jacobian(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Observables (n, n_out) and dc/dy (n, n_out, n_in) with respect to the raw y."""
        z, dz = self._encode(y, True)
        c, jz = self.inner.value_and_jacobian(z)
        return c, np.matmul(jz, dz)


def _build_network(model) -> NumpyForward | None:
    """NumPy mirror of the network part of ``model`` (input encoding excluded), or None."""
    import torch

    F = model.features
    if type(F) not in (NeuralODE, ResNet) or model.W.dtype != torch.float64:
        return None
    norm = model.normalizer
    if norm.y_shift.dtype != torch.float64 or norm.c_shift.dtype != torch.float64:
        return None

    def npy(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float64)

    y_shift, y_scale = npy(norm.y_shift), npy(norm.y_scale)
    c_shift, c_scale = npy(norm.c_shift), npy(norm.c_scale).reshape(-1)  # (1,) or (n_out,)
    k_in = npy(F.K_in) / y_scale[None, :]
    b_in = npy(F.b_in) - k_in @ y_shift
    W = npy(model.W)
    w_out = W[:, :-1] * c_scale[:, None]
    c_out = W[:, -1] * c_scale + c_shift
    K, b = npy(F.K), npy(F.b)
    h = F.final_time / F.n_steps
    if type(F) is ResNet:
        layers = [_aug(K[j].T, b[j]) for j in range(F.n_steps)]
        return NumpyForward("resnet", k_in, b_in, layers, h, w_out, c_out)
    eye = np.eye(F.width)
    A = K - K.transpose(0, 2, 1) - F.gamma * eye          # (d + 1, w, w)
    At = A.transpose(0, 2, 1)
    stages: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []   # (node, mid, next node)
    for j in range(F.n_steps):
        mid_t, mid_b = 0.5 * (At[j] + At[j + 1]), 0.5 * (b[j] + b[j + 1])
        stages.append((_aug(At[j], b[j]), _aug(mid_t, mid_b), _aug(At[j + 1], b[j + 1])))
    return NumpyForward("neural_ode", k_in, b_in, stages, h, w_out, c_out)
