"""UM-Bridge adapters: our models as :class:`umbridge.Model` subclasses, and request checks.

:class:`ForwardModel` serves anything with ``model(y)``, ``jvp`` and ``vjp`` (the surrogate of
:func:`surrogate.load`, the :class:`~surrogate.serving.pde_model.PDEModel`);
:class:`PosteriorModel` serves the log-density of a
:class:`~surrogate.serving.posterior.GaussianPosterior`. The request checks turn a malformed
request body into a :class:`~surrogate.errors.RequestError` that carries the UM-Bridge error
type (``kind``) and the HTTP status of the answer (see :func:`request_error`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import umbridge

from surrogate.errors import RequestError

__all__ = ["ForwardModel", "PosteriorModel", "config_of", "error_kind", "error_status",
           "finite_result", "index_of", "parameters_of", "request_error", "vector_of"]


# ---------------------------------------------------------------------- errors
def request_error(message: str, kind: str = "InvalidInput", status: int = 400) -> RequestError:
    """A :class:`~surrogate.errors.RequestError` answered with UM-Bridge error type ``kind``
    (``InvalidInput``, ``ModelNotFound``, ``UnsupportedFeature``, ``InvalidOutput``) and HTTP
    status ``status``."""
    exc = RequestError(message)
    vars(exc).update(kind=kind, status=status)
    return exc


def error_kind(exc: RequestError) -> str:
    """The UM-Bridge error type of ``exc`` (``InvalidInput`` unless set)."""
    return str(vars(exc).get("kind", "InvalidInput"))


def error_status(exc: RequestError) -> int:
    """The HTTP status of the answer to ``exc`` (400 unless set)."""
    return int(vars(exc).get("status", 400))


# ---------------------------------------------------------------------- models
def as_float_array(values: Any) -> np.ndarray:
    """A request's numbers as a float64 array."""
    return np.asarray(values, dtype=np.float64)


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (a 5000-digit number stays one line)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else \
        f"an integer of {len(str(abs(value)))} digits"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def finite_result(values: Any, what: str, allow_minus_inf: bool = False) -> Any:
    """``values`` (array or nested list) if every entry is finite (``-inf`` too with
    ``allow_minus_inf``: the log-density outside the prior box).

    Raises
    ------
    RequestError
        (InvalidInput, 400) naming ``what``: a finite request whose result overflows float64,
        e.g. a Gradient with ``sens`` entries near 1e308.
    """
    arr = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if allow_minus_inf:
        bad &= ~np.isneginf(arr)
    if bad.any():
        raise request_error(f"{what} is not finite ({int(bad.sum())} of {arr.size} values, "
                            f"e.g. {arr[bad].flat[0]}): the result overflows float64; scale "
                            "the request's vector down")
    return values


class VectorModel(umbridge.Model):
    """A UM-Bridge model of one input vector, size ``model.n_in``, and one output vector,
    size ``model.n_out`` (the base of :class:`ForwardModel` and
    :class:`surrogate.serving.uncertainty.StdModel`)."""

    def __init__(self, name: str, model: Any) -> None:
        super().__init__(name)
        self.model = model

    def get_input_sizes(self, config: dict | None = None) -> list[int]:
        return [int(self.model.n_in)]

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [int(self.model.n_out)]

    def supports_evaluate(self) -> bool:
        return True


class ForwardModel(VectorModel):
    """A model with ``__call__``, ``jvp``, ``vjp`` (surrogate or PDE) as a UM-Bridge model.

    Parameters
    ----------
    name : str
        The UM-Bridge model name.
    model : object
        ``model(y)`` (d,) -> (m,), ``model.jvp(y, v)`` (m,), ``model.vjp(y, w)`` (d,), and
        ``n_in`` = d, ``n_out`` = m.
    """

    def __call__(self, parameters: list, config: dict | None = None) -> list:
        out = finite_result(self.model(as_float_array(parameters[0])),
                            f"the output of {self.name!r}")
        return [out.tolist()]

    def gradient(self, out_wrt: int, in_wrt: int, parameters: list, sens: list,
                 config: dict | None = None) -> list:
        with np.errstate(over="ignore", invalid="ignore"):
            out = self.model.vjp(as_float_array(parameters[0]), as_float_array(sens))
        return finite_result(out, f"the Gradient of {self.name!r} (J^T sens)").tolist()

    def apply_jacobian(self, out_wrt: int, in_wrt: int, parameters: list, vec: list,
                       config: dict | None = None) -> list:
        with np.errstate(over="ignore", invalid="ignore"):
            out = self.model.jvp(as_float_array(parameters[0]), as_float_array(vec))
        return finite_result(out, f"the ApplyJacobian of {self.name!r} (J vec)").tolist()

    def supports_gradient(self) -> bool:
        return True

    def supports_apply_jacobian(self) -> bool:
        return True


class PosteriorModel(umbridge.Model):
    """y (d,) -> [log-posterior] of a :class:`~surrogate.serving.posterior.GaussianPosterior`,
    with its gradient (``Gradient``: sens[0] * grad, ``ApplyJacobian``: [grad . vec])."""

    def __init__(self, name: str, posterior: Any) -> None:
        super().__init__(name)
        self.posterior = posterior

    def get_input_sizes(self, config: dict | None = None) -> list[int]:
        return [int(self.posterior.n_in)]

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [1]

    def __call__(self, parameters: list, config: dict | None = None) -> list:
        value = self.posterior.log_prob(as_float_array(parameters[0]))
        return [[finite_result(value, f"the log-density of {self.name!r}",
                               allow_minus_inf=True)]]

    def gradient(self, out_wrt: int, in_wrt: int, parameters: list, sens: list,
                 config: dict | None = None) -> list:
        _, g = self.posterior.log_prob_and_grad(as_float_array(parameters[0]))
        with np.errstate(over="ignore", invalid="ignore"):
            out = float(sens[0]) * g
        return finite_result(out, f"the Gradient of {self.name!r} (sens[0] x gradient)"
                             ).tolist()

    def apply_jacobian(self, out_wrt: int, in_wrt: int, parameters: list, vec: list,
                       config: dict | None = None) -> list:
        _, g = self.posterior.log_prob_and_grad(as_float_array(parameters[0]))
        with np.errstate(over="ignore", invalid="ignore"):
            out = float(g @ as_float_array(vec))
        return [finite_result(out, f"the ApplyJacobian of {self.name!r} (gradient . vec)")]

    def supports_evaluate(self) -> bool:
        return True

    def supports_gradient(self) -> bool:
        return True

    def supports_apply_jacobian(self) -> bool:
        return True


# ---------------------------------------------------------------------- request checks
def vector_of(value: Any, size: int, what: str) -> list[float]:
    """``value`` as a list of ``size`` finite floats.

    Raises
    ------
    RequestError
        Not a list of numbers (booleans refused), wrong length, or NaN/inf (naming the first
        such entry); ``what`` names the vector in the message.
    """
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int | float)
                                          for v in value):
        raise request_error(f"{what} must be a list of numbers")
    if len(value) != size:
        raise request_error(f"{what} has invalid length! Expected {size} but got "
                            f"{len(value)}.")
    out = []
    for i, v in enumerate(value):
        try:
            f = float(v)                  # a 400-digit integer: OverflowError
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise request_error(f"{what}[{i}] = {_short(v)} is not a finite float64 number")
        out.append(f)
    return out


def parameters_of(body: dict, model: umbridge.Model, config: dict) -> list[list[float]]:
    """The request's ``input``: one checked vector per model input."""
    params = body.get("input")
    sizes = model.get_input_sizes(config)
    if not isinstance(params, list) or not all(isinstance(p, list) for p in params):
        raise request_error("'input' must be a list of lists of numbers")
    if len(params) != len(sizes):
        raise request_error(f"Number of input parameters does not match model number of "
                            f"model inputs! Expected {len(sizes)}, got {len(params)}.")
    return [vector_of(p, s, f"Input parameter {i}") for i, (p, s) in
            enumerate(zip(params, sizes, strict=True))]


def config_of(body: dict) -> dict:
    """The request's ``config`` object ({} if absent)."""
    config = body.get("config", {})
    if not isinstance(config, dict):
        raise request_error("'config' must be a JSON object")
    return config


def index_of(body: dict, key: str, n: int) -> int:
    """The request's integer ``key`` (``outWrt``, ``inWrt``) in [0, n)."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise request_error(f"Invalid {key} index {_short(value)}! Expected an integer "
                            f"between 0 and {n - 1}.")
    return value
