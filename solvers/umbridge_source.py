"""Any model served over the UM-Bridge protocol as a problem (a data source for datasets).

``UMBridgeProblem(comm, url=..., model=..., lower=[...], upper=[...])`` follows the
:class:`solvers.base.PDESolver` protocol; requests go through the ``umbridge`` client
package (:class:`umbridge.HTTPModel`), not hand-written HTTP.

* Sizes: the model's inputs are concatenated into y (``n_parameters = sum(input sizes)``,
  y is split back into the input vectors in order) and its outputs into c
  (``n_observables = sum(output sizes)``), both as the server reports them for ``config``.
* Distribution: y ~ U[lower, upper] per entry, drawn as ``rng.uniform(lower, upper)``
  (one call); ``lower``/``upper`` are lists of n_parameters numbers, or one number for all.
* Errors: an unreachable server, an answer that is not UM-Bridge, a model name the server does
  not serve or that does not support Evaluate, and bad settings raise
  :class:`~solvers.errors.SolverSettingsError` in the constructor, before any work. In
  :meth:`UMBridgeProblem.solve`, a server error (its type and message), a non-JSON answer
  (its text), a lost connection and a timeout raise :class:`~solvers.errors.SolveError`, so
  the dataset engine records the sample as failed and goes on.
* Timeout: umbridge 1.2's client calls ``requests.get``/``requests.post`` without a timeout
  and has no option for one. This module therefore replaces the ``requests`` name inside
  ``umbridge.um`` by a thin proxy (:class:`_RequestsWithTimeout`) that forwards every call
  unchanged, adding ``timeout=`` only while a :class:`UMBridgeProblem` request runs (a
  context variable, so threads and other umbridge clients in the process are unaffected).
  ``timeout`` (seconds, default 60) bounds the connection and each wait for data of one
  request (requests' semantics), not the total time of a response that keeps streaming.
* MPI: on a communicator of several ranks, rank 0 sends the requests and broadcasts the
  answer (or the error), so observables are identical on every rank. With one rank per
  sample (COMM_SELF, the default) every rank sends its own requests.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import requests
import umbridge
import umbridge.um

from solvers.common.validation import check_vector
from solvers.errors import SolveError, SolverSettingsError

#: default seconds a request may wait for the server (connection, and each read)
DEFAULT_TIMEOUT = 60.0

#: the timeout of the UM-Bridge requests running in this context (None: no timeout)
_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "umbridge_request_timeout", default=None)

#: longest server text quoted in a message
_MAX_QUOTE = 300


class _RequestsWithTimeout:
    """Stands in for the ``requests`` module inside ``umbridge.um``: every attribute is
    ``requests``'s; ``get`` and ``post`` add ``timeout=`` when one is set in this context."""

    def __init__(self, module: Any):
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        timeout = _TIMEOUT.get()
        if timeout is not None and "timeout" not in kwargs:
            kwargs["timeout"] = timeout
        return kwargs

    def get(self, url: str, **kwargs: Any) -> Any:
        """``requests.get`` with the context's timeout."""
        return self._module.get(url, **self._kwargs(kwargs))

    def post(self, url: str, **kwargs: Any) -> Any:
        """``requests.post`` with the context's timeout."""
        return self._module.post(url, **self._kwargs(kwargs))


def _install_timeout_proxy() -> None:
    if not isinstance(umbridge.um.requests, _RequestsWithTimeout):
        umbridge.um.requests = _RequestsWithTimeout(umbridge.um.requests)


@contextlib.contextmanager
def request_timeout(seconds: float | None) -> Iterator[None]:
    """Within the block, umbridge client requests time out after ``seconds``."""
    _install_timeout_proxy()
    token = _TIMEOUT.set(seconds)
    try:
        yield
    finally:
        _TIMEOUT.reset(token)


def _quote(text: Any) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_QUOTE else text[:_MAX_QUOTE - 3] + "..."


def describe_request_error(exc: BaseException, url: str, timeout: float) -> str:
    """One line saying why a request to the UM-Bridge server ``url`` failed."""
    if isinstance(exc, requests.exceptions.Timeout):
        return (f"the UM-Bridge server at {url} did not answer within the timeout of "
                f"{timeout:g} s ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return (f"cannot reach the UM-Bridge server at {url} (connection failed: "
                f"{_quote(_root_cause(exc))})")
    if isinstance(exc, json.JSONDecodeError):  # requests' JSONDecodeError derives from it
        return (f"the UM-Bridge server at {url} did not answer with JSON but with "
                f"{_quote(exc.doc)!r} (an HTTP error page? the server's log says why)")
    if isinstance(exc, KeyError):
        return (f"the UM-Bridge server at {url} answered without the field {exc} (is it a "
                "UM-Bridge server?)")
    if isinstance(exc, requests.exceptions.RequestException):
        return f"request to the UM-Bridge server at {url} failed: {_quote(exc)}"
    return f"the UM-Bridge server at {url} reported: {_quote(exc)}"


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return exc


class UMBridgeProblem:
    """A model served over UM-Bridge (any language, any reachable machine) as a problem.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        COMM_SELF (every rank sends its own requests) or a larger communicator (rank 0 sends,
        every rank gets the answer).
    url : str
        Server address, ``http://host:port`` (or https).
    model : str
        Name of the model on the server.
    names : list of str, optional
        Parameter names (n_parameters of them); default ``y0, y1, ...``.
    lower, upper : list of float, or float
        The uniform parameter box; one number applies to every entry.
    config : dict, optional
        The model's ``config`` (JSON), sent with every request.
    timeout : float
        Seconds a request may wait for the server (connection, and each read).

    Raises
    ------
    SolverSettingsError
        Bad settings, or the server is unreachable, is not a UM-Bridge server, does not serve
        ``model`` or cannot evaluate it.
    """

    name = "umbridge"

    def __init__(self, comm: Any, *, url: str, model: str, names: Sequence[str] | None = None,
                 lower: Sequence[float] | float, upper: Sequence[float] | float,
                 config: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.comm = comm
        self.url = self._check_url(url)
        if not isinstance(model, str) or not model:
            raise SolverSettingsError(f"model must be a model name (str), got {model!r}")
        self.model = model
        self.config = self._check_config(config)
        self.timeout = self._check_timeout(timeout)
        sizes = self._on_root(self._connect)
        self.input_sizes, self.output_sizes = sizes
        self.n_parameters = int(sum(self.input_sizes))
        self.n_observables = int(sum(self.output_sizes))
        self.lower = self._check_bound(lower, "lower")
        self.upper = self._check_bound(upper, "upper")
        bad = np.flatnonzero(self.lower >= self.upper)
        if bad.size:
            k = int(bad[0])
            raise SolverSettingsError(f"lower[{k}] = {self.lower[k]:g} must be below upper[{k}] "
                                      f"= {self.upper[k]:g}")
        self.parameter_names = self._check_names(names)
        self._given_names = names is not None

    # ------------------------------------------------------------------ settings
    @staticmethod
    def _check_url(url: Any) -> str:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) \
                or len(url.rstrip("/")) <= len("https://"):
            raise SolverSettingsError(f"url must be an http:// or https:// address such as "
                                      f"\"http://127.0.0.1:4242\", got {url!r}")
        return url.rstrip("/")

    @staticmethod
    def _check_config(config: Any) -> dict[str, Any]:
        if config is None:
            return {}
        if not isinstance(config, dict):
            raise SolverSettingsError(f"config must be a table (dict), got {config!r}")
        try:
            return json.loads(json.dumps(config, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise SolverSettingsError(f"config must be JSON data: {exc}") from None

    @staticmethod
    def _check_timeout(timeout: Any) -> float:
        ok = not isinstance(timeout, bool | str)
        try:
            value = float(timeout) if ok else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise SolverSettingsError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        return value

    def _check_bound(self, value: Any, name: str) -> np.ndarray:
        n = self.n_parameters
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value] * n
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
            raise SolverSettingsError(f"{name} must be a list of {n} numbers (the model has "
                                      f"{n} inputs) or one number, got {value!r}")
        items = list(value)
        if len(items) != n or any(isinstance(v, bool | str) for v in items):
            raise SolverSettingsError(f"{name} must be a list of {n} numbers (the model has "
                                      f"{n} inputs) or one number, got {value!r}")
        try:
            arr = np.array(items, dtype=np.float64)
        except (TypeError, ValueError):
            raise SolverSettingsError(f"{name} must be numbers, got {value!r}") from None
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise SolverSettingsError(f"{name}[{bad[0]}] = {arr[bad[0]]} is not finite")
        return arr

    def _check_names(self, names: Any) -> tuple[str, ...]:
        n = self.n_parameters
        if names is None:
            return tuple(f"y{k}" for k in range(n))
        if isinstance(names, str) or not hasattr(names, "__iter__"):
            raise SolverSettingsError(f"names must be a list of {n} strings, got {names!r}")
        out = tuple(names)
        if len(out) != n or not all(isinstance(s, str) and s for s in out) \
                or len(set(out)) != n:
            raise SolverSettingsError(f"names must be {n} distinct non-empty strings (the model "
                                      f"has {n} inputs), got {names!r}")
        return out

    def settings(self) -> dict[str, Any]:
        """The resolved settings (JSON); ``UMBridgeProblem(comm, **settings())`` rebuilds."""
        return {"url": self.url, "model": self.model,
                "names": list(self.parameter_names) if self._given_names else None,
                "lower": self.lower.tolist(), "upper": self.upper.tolist(),
                "config": self.config, "timeout": self.timeout}

    # ------------------------------------------------------------------ server
    def _on_root(self, fn: Any) -> Any:
        """``fn()`` on rank 0 of the communicator, its result (or its error) on every rank."""
        if self.comm.size == 1:
            return fn()
        value: Any = None
        error: tuple[type[Exception], str, int | None] | None = None
        if self.comm.rank == 0:
            try:
                value = fn()
            except SolveError as exc:
                error = (SolveError, exc.reason, exc.sample)
            except SolverSettingsError as exc:
                error = (SolverSettingsError, str(exc), None)
        value, error = self.comm.bcast((value, error), root=0)
        if error is None:
            return value
        cls, message, sample = error
        if cls is SolveError:
            raise SolveError(message, sample=sample)
        raise SolverSettingsError(message)

    def _connect(self) -> tuple[list[int], list[int]]:
        """Ask the server for its models, this model's support and sizes (one rank)."""
        try:
            with request_timeout(self.timeout):
                served = umbridge.supported_models(self.url)
                if self.model not in served:
                    raise SolverSettingsError(
                        f"the UM-Bridge server at {self.url} does not serve a model "
                        f"{self.model!r}; it serves {sorted(served)}")
                self._http = umbridge.HTTPModel(self.url, self.model)
                if not self._http.supports_evaluate():
                    raise SolverSettingsError(
                        f"model {self.model!r} at {self.url} does not support Evaluate")
                sizes = (self._http.get_input_sizes(self.config),
                         self._http.get_output_sizes(self.config))
        except SolverSettingsError:
            raise
        except Exception as exc:  # requests, JSON, protocol version, KeyError of a bad answer
            raise SolverSettingsError(
                describe_request_error(exc, self.url, self.timeout)) from None
        try:
            ins, outs = ([int(v) for v in s] for s in sizes)
            ok = ins and outs and min(ins) >= 0 and min(outs) >= 0 and sum(ins) and sum(outs)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise SolverSettingsError(f"model {self.model!r} at {self.url} reports input sizes "
                                      f"{sizes[0]!r} and output sizes {sizes[1]!r}; both need "
                                      "at least one entry")
        return ins, outs

    # ------------------------------------------------------------------ problem interface
    @property
    def parameter_bounds(self) -> np.ndarray:
        """The box, shape (n_parameters, 2): rows (lower, upper)."""
        return np.column_stack([self.lower, self.upper])

    def sample_parameters(self, rng: np.random.Generator) -> np.ndarray:
        """y ~ U[lower, upper], one ``rng.uniform(lower, upper)`` call; shape (n_parameters,)."""
        return rng.uniform(self.lower, self.upper)

    def check_parameters(self, y: Any) -> np.ndarray:
        """y as float64 (n_parameters,), finite (the box is not enforced: the server decides)."""
        return check_vector(y, self.n_parameters)

    def solve(self, y: Any, *, sample: int | None = None) -> np.ndarray:
        """Evaluate the model at y; the outputs concatenated, shape (n_observables,), float64.

        Raises
        ------
        SolveError
            The server answered with an error, not JSON or with the wrong sizes, or the
            request failed or timed out (message names the server and the reason).
        """
        y = self.check_parameters(y)
        return self._on_root(lambda: self._evaluate(y, sample))

    def _evaluate(self, y: np.ndarray, sample: int | None) -> np.ndarray:
        bounds = np.cumsum([0, *self.input_sizes])
        parameters = [y[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        try:
            with request_timeout(self.timeout):
                output = self._http(parameters, self.config)
        except Exception as exc:
            raise SolveError(describe_request_error(exc, self.url, self.timeout),
                             sample=sample) from None
        try:
            parts = [np.asarray(v, dtype=np.float64).reshape(-1) for v in output]
            c = np.concatenate(parts) if parts else np.empty(0)
        except (TypeError, ValueError) as exc:
            raise SolveError(f"the UM-Bridge server at {self.url} returned output that is not "
                             f"lists of numbers ({_quote(exc)})", sample=sample) from None
        if [p.size for p in parts] != list(self.output_sizes):
            raise SolveError(f"the UM-Bridge server at {self.url} returned outputs of sizes "
                             f"{[p.size for p in parts]}, expected {list(self.output_sizes)}",
                             sample=sample)
        return c


__all__ = ["DEFAULT_TIMEOUT", "UMBridgeProblem", "describe_request_error", "request_timeout"]
