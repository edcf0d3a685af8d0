"""The UM-Bridge protocol 1.0 server: our own aiohttp application and its run loop.

The application answers the protocol's routes (``/Info``, ``/InputSizes``, ``/OutputSizes``,
``/ModelInfo``, ``/Evaluate``, ``/Gradient``, ``/ApplyJacobian``, ``/ApplyHessian``) for a list
of :class:`umbridge.Model` objects (:mod:`surrogate.serving.adapters`), so
``umbridge.HTTPModel`` and umbridge's emcee/PyMC clients talk to it. Every bad request
(malformed JSON, wrong sizes, NaN, unknown model, unsupported feature) gets a UM-Bridge error
response ``{"error": {"type", "message"}}`` with HTTP status 400 (500 for a failed model
evaluation) and the server keeps serving. :func:`serve` listens until SIGINT/SIGTERM.

Limits (denial of service)
--------------------------
* Request bodies larger than ``max_request_bytes`` are refused (HTTP 413, an InvalidInput
  body) after reading at most that many bytes; the default, :func:`default_request_limit`,
  is 64 KiB plus 64 bytes for every number a request of the served models can carry (inputs
  plus the largest output, i.e. ``sens``), e.g. 121 KiB for the DCR surrogate (3 -> 882).
* A connection must deliver its request line and headers within ``timeout`` seconds of
  opening (and of the previous request, when kept alive), and its body within ``timeout``
  seconds of the headers (HTTP 408); slow or half-open connections are closed then.
* Any JSON Python can parse is checked before use: numbers beyond float64 (a 400-digit
  integer), integers of more than 4300 digits, nesting deeper than the parser's recursion
  limit, a model name that is not a string all get an InvalidInput body (400), never a
  plain-text 500. A client that drops the connection mid-request costs one log line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import umbridge
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from surrogate.errors import RequestError
from surrogate.serving.adapters import (
    config_of,
    error_kind,
    error_status,
    index_of,
    parameters_of,
    request_error,
    vector_of,
)

__all__ = ["DEFAULT_TIMEOUT", "PROG", "PROTOCOL_VERSION", "default_request_limit",
           "format_url", "make_app", "serve"]

PROG = "serve-surrogate"
PROTOCOL_VERSION = 1.0
#: seconds a connection may take to send its request headers, and then its body
DEFAULT_TIMEOUT = 10.0
#: request-size limit: fixed part (name, config, JSON syntax) and bytes per number carried
REQUEST_OVERHEAD_BYTES = 64 * 1024
BYTES_PER_NUMBER = 64
#: seconds an unread request body is drained before the connection is closed
LINGER_SECONDS = 2.0

Route = Callable[[web.Request], Awaitable[dict]]


class _ClientGone(Exception):
    """The client closed the connection before its request body was complete."""


def _log(message: str) -> None:
    """One line on stderr (the server's only log output besides start and stop)."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _error(kind: str, message: str, status: int) -> web.Response:
    response = web.json_response({"error": {"type": kind, "message": message}}, status=status)
    if status in (408, 413):      # the rest of the body is not read: close the connection
        response.force_close()
    return response


def _peer(request: web.Request) -> str:
    return f"client {request.remote}" if request.remote else "a client"


def _handler(fn: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``fn``'s dict as a JSON response, a RequestError as a UM-Bridge error response; a
    dropped client is one log line, anything unexpected a one-line log and a 500 error body
    (never a traceback)."""
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return web.json_response(await fn(request))
        except RequestError as exc:
            return _error(error_kind(exc), str(exc), error_status(exc))
        except _ClientGone:
            _log(f"{_peer(request)} closed the connection before its {request.path} request "
                 "was complete")
            return _error("InvalidInput", "incomplete request", 400)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the server or flood logs
            _log(f"internal error on {request.path}: {type(exc).__name__}: {str(exc)[:200]}")
            return _error("InternalError", f"internal server error: {type(exc).__name__}", 500)
    return wrapped


async def _read_body(request: web.Request, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """The request body as a JSON object, read within ``timeout`` seconds.

    Raises
    ------
    RequestError
        Body too large (413), too slow (408), not JSON of any kind (400).
    _ClientGone
        The client dropped the connection.
    """
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise request_error(f"request body larger than {request.client_max_size} bytes, the "
                            "server's limit (serve-surrogate --max-request-bytes)",
                            status=413) from None
    except TimeoutError:
        raise request_error(f"request body not received within {timeout:g} s",
                            status=408) from None
    except (ConnectionError, RequestPayloadError):
        raise _ClientGone() from None
    try:
        body = json.loads(raw)
    except RecursionError:
        raise request_error("request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:     # JSONDecodeError, UnicodeDecodeError, > 4300-digit integers
        raise request_error(f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise request_error("request body must be a JSON object")
    return body


def format_url(host: str, port: int, scheme: str = "http") -> str:
    """``http://host:port``, an IPv6 address in brackets (``http://[::1]:4242``); without a
    scheme, ``host:port``."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{scheme}://{shown}:{port}" if scheme else f"{shown}:{port}"


def default_request_limit(models: list[umbridge.Model]) -> int:
    """Default largest request body (bytes): 64 KiB plus 64 bytes for each number a request
    can carry (all inputs and the largest output: ``sens`` of a Gradient request) for the
    largest of ``models`` (a float64 in JSON takes at most 24 characters and a separator)."""
    numbers = max((sum(m.get_input_sizes({})) + max(m.get_output_sizes({}), default=0)
                   for m in models), default=0)
    return REQUEST_OVERHEAD_BYTES + BYTES_PER_NUMBER * int(numbers)


def make_app(models: list[umbridge.Model], max_workers: int = 1,
             max_request_bytes: int | None = None,
             timeout: float = DEFAULT_TIMEOUT) -> web.Application:
    """The aiohttp application serving ``models`` over UM-Bridge protocol 1.0.

    Model evaluations run in a thread pool of ``max_workers`` threads (the event loop keeps
    answering /Info and error responses meanwhile); the models must be thread-safe (the
    surrogate and the PDE model are).

    Parameters
    ----------
    max_request_bytes : int, optional
        Largest request body (default :func:`default_request_limit`).
    timeout : float
        Seconds a request body may take to arrive.
    """
    by_name = {m.name: m for m in models}
    executor = ThreadPoolExecutor(max_workers=max_workers)
    limit = default_request_limit(models) if max_request_bytes is None else max_request_bytes

    async def _body_of(request: web.Request) -> dict:
        return await _read_body(request, timeout)

    def model_of(body: dict) -> umbridge.Model:
        name = body.get("name")
        if not isinstance(name, str):
            raise request_error(f"'name' must be the model name (a string), got "
                                f"{type(name).__name__}")
        if name not in by_name:
            raise request_error(f"Model {name[:100]!r} not found! The following are available:"
                                f" {sorted(by_name)}.", "ModelNotFound")
        return by_name[name]

    async def run(fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except ValueError as exc:                 # input the model refuses (e.g. box, ranges)
            raise request_error(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a failed evaluation must not stop the server
            raise request_error(f"model evaluation failed: {type(exc).__name__}: {exc}",
                                "InvalidOutput", 500) from None

    def unsupported(feature: str) -> RequestError:
        return request_error(f"{feature} not supported by model!", "UnsupportedFeature")

    async def info(request: web.Request) -> dict:
        return {"protocolVersion": PROTOCOL_VERSION, "models": list(by_name)}

    async def model_info(request: web.Request) -> dict:
        model = model_of(await _body_of(request))
        return {"support": {"Evaluate": model.supports_evaluate(),
                            "Gradient": model.supports_gradient(),
                            "ApplyJacobian": model.supports_apply_jacobian(),
                            "ApplyHessian": model.supports_apply_hessian()}}

    async def input_sizes(request: web.Request) -> dict:
        body = await _body_of(request)
        return {"inputSizes": model_of(body).get_input_sizes(config_of(body))}

    async def output_sizes(request: web.Request) -> dict:
        body = await _body_of(request)
        return {"outputSizes": model_of(body).get_output_sizes(config_of(body))}

    async def evaluate(request: web.Request) -> dict:
        body = await _body_of(request)
        model, config = model_of(body), config_of(body)
        if not model.supports_evaluate():
            raise unsupported("Evaluate")
        params = parameters_of(body, model, config)
        return {"output": await run(model.__call__, params, config)}

    async def gradient(request: web.Request) -> dict:
        body = await _body_of(request)
        model, config = model_of(body), config_of(body)
        if not model.supports_gradient():
            raise unsupported("Gradient")
        params = parameters_of(body, model, config)
        out_sizes = model.get_output_sizes(config)
        out_wrt = index_of(body, "outWrt", len(out_sizes))
        in_wrt = index_of(body, "inWrt", len(params))
        sens = vector_of(body.get("sens"), out_sizes[out_wrt], "Sensitivity vector sens")
        return {"output": await run(model.gradient, out_wrt, in_wrt, params, sens, config)}

    async def apply_jacobian(request: web.Request) -> dict:
        body = await _body_of(request)
        model, config = model_of(body), config_of(body)
        if not model.supports_apply_jacobian():
            raise unsupported("ApplyJacobian")
        params = parameters_of(body, model, config)
        out_wrt = index_of(body, "outWrt", len(model.get_output_sizes(config)))
        in_wrt = index_of(body, "inWrt", len(params))
        vec = vector_of(body.get("vec"), len(params[in_wrt]), "Vector vec")
        return {"output": await run(model.apply_jacobian, out_wrt, in_wrt, params, vec, config)}

    async def apply_hessian(request: web.Request) -> dict:
        model = model_of(await _body_of(request))
        raise request_error(f"ApplyHessian not supported by model {model.name!r}!",
                            "UnsupportedFeature")

    app = web.Application(client_max_size=limit)
    app.router.add_get("/Info", _handler(info))
    routes: tuple[tuple[str, Route], ...] = (
        ("/ModelInfo", model_info), ("/InputSizes", input_sizes),
        ("/OutputSizes", output_sizes), ("/Evaluate", evaluate), ("/Gradient", gradient),
        ("/ApplyJacobian", apply_jacobian), ("/ApplyHessian", apply_hessian))
    for path, fn in routes:
        app.router.add_post(path, _handler(fn))

    async def close_executor(app: web.Application) -> None:
        executor.shutdown(wait=True, cancel_futures=True)

    app.on_cleanup.append(close_executor)
    return app


async def serve(app: web.Application, host: str, port: int, *, names: list[str] | None = None,
                ready: Callable[[int], Any] | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> None:
    """Listen on ``host:port`` until SIGINT/SIGTERM, then shut down cleanly.

    Parameters
    ----------
    app : aiohttp.web.Application
        From :func:`make_app`.
    host : str
        Address to listen on.
    port : int
        TCP port; 0 picks a free one (printed, and passed to ``ready``).
    names : list of str, optional
        Model names, for the start-up line.
    ready : callable, optional
        Called with the bound port once the server listens.
    timeout : float
        Seconds a connection may take to send its request headers (from opening, or from
        the previous response); then it is closed.

    Raises
    ------
    OSError
        The address cannot be bound.
    """
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           keepalive_timeout=timeout, lingering_time=LINGER_SECONDS)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        addresses = runner.addresses
        bound = addresses[0][1] if addresses else port
        print(f"{PROG}: serving {names or []} on {format_url(host, bound)} (UM-Bridge "
              f"protocol {PROTOCOL_VERSION}); Ctrl-C stops", flush=True)
        if ready is not None:
            ready(bound)
        await stop.wait()
        print(f"{PROG}: stopping", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
