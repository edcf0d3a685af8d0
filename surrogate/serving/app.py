"""The UM-Bridge protocol 1.0 server: our own aiohttp application and its run loop.

The application answers the protocol's routes (``/Info``, ``/InputSizes``, ``/OutputSizes``,
``/ModelInfo``, ``/Evaluate``, ``/Gradient``, ``/ApplyJacobian``, ``/ApplyHessian``) for a list
of :class:`umbridge.Model` objects (:mod:`surrogate.serving.adapters`), so
``umbridge.HTTPModel`` and umbridge's emcee/PyMC clients talk to it. Every bad request
(malformed JSON, wrong sizes, NaN, unknown model, unsupported feature) gets a UM-Bridge error
response ``{"error": {"type", "message"}}`` with HTTP status 400 (500 for a failed model
evaluation) and the server keeps serving. :func:`serve` listens until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import umbridge
from aiohttp import web

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

__all__ = ["PROG", "PROTOCOL_VERSION", "make_app", "serve"]

PROG = "serve-surrogate"
PROTOCOL_VERSION = 1.0
#: largest request body accepted (bytes)
MAX_REQUEST_BYTES = 64 * 1024 ** 2

Route = Callable[[web.Request], Awaitable[dict]]


def _error(kind: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


def _handler(fn: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``fn``'s dict as a JSON response, a RequestError as a UM-Bridge error response."""
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return web.json_response(await fn(request))
        except RequestError as exc:
            return _error(error_kind(exc), str(exc), error_status(exc))
    return wrapped


async def _body_of(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise request_error(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise request_error("request body must be a JSON object")
    return body


def make_app(models: list[umbridge.Model], max_workers: int = 1) -> web.Application:
    """The aiohttp application serving ``models`` over UM-Bridge protocol 1.0.

    Model evaluations run in a thread pool of ``max_workers`` threads (the event loop keeps
    answering /Info and error responses meanwhile).
    """
    by_name = {m.name: m for m in models}
    executor = ThreadPoolExecutor(max_workers=max_workers)

    def model_of(body: dict) -> umbridge.Model:
        name = body.get("name")
        if name not in by_name:
            raise request_error(f"Model {name!r} not found! The following are available: "
                                f"{sorted(by_name)}.", "ModelNotFound")
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

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
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
                ready: Callable[[int], Any] | None = None) -> None:
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

    Raises
    ------
    OSError
        The address cannot be bound.
    """
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
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
        print(f"{PROG}: serving {names or []} on http://{host}:{bound} (UM-Bridge protocol "
              f"{PROTOCOL_VERSION}); Ctrl-C stops", flush=True)
        if ready is not None:
            ready(bound)
        await stop.wait()
        print(f"{PROG}: stopping", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
