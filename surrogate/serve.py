"""``serve-surrogate``: a trained surrogate (and the PDE) over the UM-Bridge protocol 1.0.

    serve-surrogate MODEL_DIR [--port 4242] [--host 127.0.0.1] [--pde] [--max-workers K]
                    [--observed data.npy --noise SIGMA]

Models served (UM-Bridge names):

``surrogate``     y (d,) -> c (m,): Evaluate, Gradient (J^T sens) and ApplyJacobian (J vec)
                  from automatic differentiation of the network.
``pde``           with ``--pde``: the PDE the surrogate was trained for (same solver settings
                  as its training data), Gradient/ApplyJacobian by finite differences
                  (:mod:`solvers.pde_model`): the two fidelities side by side.
``posterior``     with ``--observed`` and ``--noise``: y -> [log pi(y | d)] with a Gaussian
                  likelihood and a uniform prior on the training box, and its Gradient
                  (:mod:`surrogate.posterior`); -inf (JSON ``-Infinity``) outside the box.
``posterior_pde`` with ``--pde`` too: the same posterior on the PDE.

The server is our own aiohttp application on the protocol's routes (``/Info``,
``/InputSizes``, ``/OutputSizes``, ``/ModelInfo``, ``/Evaluate``, ``/Gradient``,
``/ApplyJacobian``, ``/ApplyHessian``); models are :class:`umbridge.Model` subclasses, so
``umbridge.HTTPModel`` and umbridge's emcee/PyMC clients talk to it. Unlike
``umbridge.serve_models`` it listens on 127.0.0.1 unless ``--host`` says otherwise. Every bad
request (malformed JSON, wrong sizes, NaN, unknown model, unsupported feature) gets a
UM-Bridge error response ``{"error": {"type", "message"}}`` with HTTP status 400 (500 for a
failed model evaluation) and the server keeps serving. The port is ``--port``, else ``$PORT``
(UM-Bridge's HPC convention), else 4242; ``--port 0`` picks a free port (printed). Ctrl-C or
SIGTERM stop it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import umbridge
from aiohttp import web

PROG = "serve-surrogate"
PROTOCOL_VERSION = 1.0


class RequestError(ValueError):
    """A request the server answers with a UM-Bridge error (type, HTTP status)."""

    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status


# ---------------------------------------------------------------------- models
class ForwardModel(umbridge.Model):
    """A model with ``__call__``, ``jvp``, ``vjp`` (surrogate or PDE) as a UM-Bridge model."""

    def __init__(self, name: str, model: Any) -> None:
        super().__init__(name)
        self.model = model

    def get_input_sizes(self, config: dict | None = None) -> list[int]:
        return [int(self.model.n_in)]

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [int(self.model.n_out)]

    def __call__(self, parameters: list, config: dict | None = None) -> list:
        return [self.model(np.asarray(parameters[0], dtype=np.float64)).tolist()]

    def gradient(self, out_wrt: int, in_wrt: int, parameters: list, sens: list,
                 config: dict | None = None) -> list:
        y = np.asarray(parameters[0], dtype=np.float64)
        return self.model.vjp(y, np.asarray(sens, dtype=np.float64)).tolist()

    def apply_jacobian(self, out_wrt: int, in_wrt: int, parameters: list, vec: list,
                       config: dict | None = None) -> list:
        y = np.asarray(parameters[0], dtype=np.float64)
        return self.model.jvp(y, np.asarray(vec, dtype=np.float64)).tolist()

    def supports_evaluate(self) -> bool:
        return True

    def supports_gradient(self) -> bool:
        return True

    def supports_apply_jacobian(self) -> bool:
        return True


class PosteriorModel(umbridge.Model):
    """y -> [log-posterior] of a :class:`~surrogate.posterior.GaussianPosterior`."""

    def __init__(self, name: str, posterior: Any) -> None:
        super().__init__(name)
        self.posterior = posterior

    def get_input_sizes(self, config: dict | None = None) -> list[int]:
        return [int(self.posterior.n_in)]

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [1]

    def __call__(self, parameters: list, config: dict | None = None) -> list:
        return [[self.posterior.log_prob(np.asarray(parameters[0], dtype=np.float64))]]

    def gradient(self, out_wrt: int, in_wrt: int, parameters: list, sens: list,
                 config: dict | None = None) -> list:
        _, g = self.posterior.log_prob_and_grad(np.asarray(parameters[0], dtype=np.float64))
        return (float(sens[0]) * g).tolist()

    def apply_jacobian(self, out_wrt: int, in_wrt: int, parameters: list, vec: list,
                       config: dict | None = None) -> list:
        _, g = self.posterior.log_prob_and_grad(np.asarray(parameters[0], dtype=np.float64))
        return [float(g @ np.asarray(vec, dtype=np.float64))]

    def supports_evaluate(self) -> bool:
        return True

    def supports_gradient(self) -> bool:
        return True

    def supports_apply_jacobian(self) -> bool:
        return True


# ---------------------------------------------------------------------- request checks
def _vector(value: Any, size: int, what: str) -> list[float]:
    """A list of ``size`` finite numbers, else RequestError naming the problem."""
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int | float)
                                          for v in value):
        raise RequestError("InvalidInput", f"{what} must be a list of numbers")
    if len(value) != size:
        raise RequestError("InvalidInput", f"{what} has invalid length! Expected {size} but "
                           f"got {len(value)}.")
    bad = [i for i, v in enumerate(value) if not math.isfinite(v)]
    if bad:
        raise RequestError("InvalidInput", f"{what}[{bad[0]}] = {value[bad[0]]} is not finite")
    return [float(v) for v in value]


def _parameters(body: dict, model: umbridge.Model, config: dict) -> list[list[float]]:
    params = body.get("input")
    sizes = model.get_input_sizes(config)
    if not isinstance(params, list) or not all(isinstance(p, list) for p in params):
        raise RequestError("InvalidInput", "'input' must be a list of lists of numbers")
    if len(params) != len(sizes):
        raise RequestError("InvalidInput", f"Number of input parameters does not match model "
                           f"number of model inputs! Expected {len(sizes)}, got {len(params)}.")
    return [_vector(p, s, f"Input parameter {i}") for i, (p, s) in
            enumerate(zip(params, sizes, strict=True))]


def _index(body: dict, key: str, n: int) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise RequestError("InvalidInput", f"Invalid {key} index {value!r}! Expected an "
                           f"integer between 0 and {n - 1}.")
    return value


def _error(kind: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


# ---------------------------------------------------------------------- application
def make_app(models: list[umbridge.Model], max_workers: int = 1) -> web.Application:
    """The aiohttp application serving ``models`` over UM-Bridge protocol 1.0.

    Model evaluations run in a thread pool of ``max_workers`` threads (the event loop keeps
    answering /Info and error responses meanwhile).
    """
    by_name = {m.name: m for m in models}
    executor = ThreadPoolExecutor(max_workers=max_workers)

    async def body_of(request: web.Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError("InvalidInput", f"request body is not valid JSON: {exc}") \
                from None
        if not isinstance(body, dict):
            raise RequestError("InvalidInput", "request body must be a JSON object")
        return body

    def model_of(body: dict) -> umbridge.Model:
        name = body.get("name")
        if name not in by_name:
            raise RequestError("ModelNotFound", f"Model {name!r} not found! The following are "
                               f"available: {sorted(by_name)}.")
        return by_name[name]

    def config_of(body: dict) -> dict:
        config = body.get("config", {})
        if not isinstance(config, dict):
            raise RequestError("InvalidInput", "'config' must be a JSON object")
        return config

    async def run(fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except ValueError as exc:                 # input the model refuses (e.g. box, ranges)
            raise RequestError("InvalidInput", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a failed evaluation must not stop the server
            raise RequestError("InvalidOutput", f"model evaluation failed: "
                               f"{type(exc).__name__}: {exc}", 500) from None

    def handler(fn: Any) -> Any:
        async def wrapped(request: web.Request) -> web.Response:
            try:
                return web.json_response(await fn(request))
            except RequestError as exc:
                return _error(exc.kind, str(exc), exc.status)
        return wrapped

    async def info(request: web.Request) -> dict:
        return {"protocolVersion": PROTOCOL_VERSION, "models": list(by_name)}

    async def model_info(request: web.Request) -> dict:
        model = model_of(await body_of(request))
        return {"support": {"Evaluate": model.supports_evaluate(),
                            "Gradient": model.supports_gradient(),
                            "ApplyJacobian": model.supports_apply_jacobian(),
                            "ApplyHessian": model.supports_apply_hessian()}}

    async def input_sizes(request: web.Request) -> dict:
        body = await body_of(request)
        return {"inputSizes": model_of(body).get_input_sizes(config_of(body))}

    async def output_sizes(request: web.Request) -> dict:
        body = await body_of(request)
        return {"outputSizes": model_of(body).get_output_sizes(config_of(body))}

    async def evaluate(request: web.Request) -> dict:
        body = await body_of(request)
        model, config = model_of(body), config_of(body)
        if not model.supports_evaluate():
            raise RequestError("UnsupportedFeature", "Evaluate not supported by model!")
        params = _parameters(body, model, config)
        return {"output": await run(model.__call__, params, config)}

    async def gradient(request: web.Request) -> dict:
        body = await body_of(request)
        model, config = model_of(body), config_of(body)
        if not model.supports_gradient():
            raise RequestError("UnsupportedFeature", "Gradient not supported by model!")
        params = _parameters(body, model, config)
        out_sizes = model.get_output_sizes(config)
        out_wrt = _index(body, "outWrt", len(out_sizes))
        in_wrt = _index(body, "inWrt", len(params))
        sens = _vector(body.get("sens"), out_sizes[out_wrt], "Sensitivity vector sens")
        return {"output": await run(model.gradient, out_wrt, in_wrt, params, sens, config)}

    async def apply_jacobian(request: web.Request) -> dict:
        body = await body_of(request)
        model, config = model_of(body), config_of(body)
        if not model.supports_apply_jacobian():
            raise RequestError("UnsupportedFeature", "ApplyJacobian not supported by model!")
        params = _parameters(body, model, config)
        out_wrt = _index(body, "outWrt", len(model.get_output_sizes(config)))
        in_wrt = _index(body, "inWrt", len(params))
        vec = _vector(body.get("vec"), len(params[in_wrt]), "Vector vec")
        return {"output": await run(model.apply_jacobian, out_wrt, in_wrt, params, vec, config)}

    async def apply_hessian(request: web.Request) -> dict:
        model = model_of(await body_of(request))
        raise RequestError("UnsupportedFeature",
                           f"ApplyHessian not supported by model {model.name!r}!")

    app = web.Application(client_max_size=64 * 1024 ** 2)
    app.router.add_get("/Info", handler(info))
    for path, fn in (("/ModelInfo", model_info), ("/InputSizes", input_sizes),
                     ("/OutputSizes", output_sizes), ("/Evaluate", evaluate),
                     ("/Gradient", gradient), ("/ApplyJacobian", apply_jacobian),
                     ("/ApplyHessian", apply_hessian)):
        app.router.add_post(path, handler(fn))

    async def close_executor(app: web.Application) -> None:
        executor.shutdown(wait=True, cancel_futures=True)

    app.on_cleanup.append(close_executor)
    return app


# ---------------------------------------------------------------------- command line
class UsageError(ValueError):
    """Bad command-line input (``serve-surrogate: error: ...``, exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Serve a trained surrogate (and optionally the PDE and a "
        "posterior) over the UM-Bridge protocol 1.0.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="surrogate model directory")
    p.add_argument("--port", type=int, default=None,
                   help="TCP port (default: $PORT, else 4242; 0 picks a free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--pde", action="store_true",
                   help="also serve the PDE (same solver settings as the training data) as "
                   "model 'pde'")
    p.add_argument("--max-workers", type=int, default=1, metavar="K",
                   help="threads evaluating requests (default 1; PDE solves are serialised)")
    p.add_argument("--observed", metavar="DATA", help="observed data (.npy or text, m values):"
                   " serve the log-posterior as model 'posterior'")
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="noise standard deviation of the Gaussian likelihood (with --observed)")
    p.add_argument("--device", default="cpu", help="torch device of the surrogate's large "
                   "batches (cpu, cuda, cuda:N)")
    return p


def resolve_port(arg: int | None, environ: dict | None = None) -> int:
    """``--port``, else ``$PORT``, else 4242; RequestError-free validation (UsageError)."""
    environ = os.environ if environ is None else environ
    if arg is not None:
        port, source = arg, "--port"
    elif environ.get("PORT"):
        try:
            port, source = int(environ["PORT"]), "$PORT"
        except ValueError:
            raise UsageError(f"$PORT = {environ['PORT']!r} is not an integer") from None
    else:
        port, source = 4242, "default"
    if not 0 <= port <= 65535:
        raise UsageError(f"{source} {port} is not a TCP port (0-65535)")
    return port


def read_observed(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--observed {path}: no such file")
    try:
        data = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, ndmin=1)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--observed {path}: cannot read ({exc})") from None
    return np.asarray(data, dtype=np.float64).ravel()


def build_models(args: argparse.Namespace) -> list[umbridge.Model]:
    """The UM-Bridge models the command line asks for."""
    from surrogate.errors import SurrogateFormatError
    from surrogate.posterior import GaussianPosterior
    from surrogate.uq_model import load

    if args.max_workers < 1:
        raise UsageError(f"--max-workers must be >= 1, got {args.max_workers}")
    if (args.observed is None) != (args.noise is None):
        raise UsageError("--observed and --noise go together")
    if args.device != "cpu":
        import torch
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: CUDA is not available on this machine")
    try:
        sur = load(args.model_dir, device=args.device)
    except SurrogateFormatError as exc:
        raise UsageError(str(exc)) from None
    models: list[umbridge.Model] = [ForwardModel("surrogate", sur)]
    pde = None
    if args.pde:
        from solvers.pde_model import PDEModel

        try:
            pde = PDEModel.from_surrogate_metadata(sur.metadata)
        except ValueError as exc:
            raise UsageError(f"--pde: {exc}") from None
        models.append(ForwardModel("pde", pde))
    if args.observed is not None:
        if sur.lower is None:
            raise UsageError("--observed: the model records no training parameter box "
                             "(train it again with this version)")
        data = read_observed(args.observed)
        try:
            models.append(PosteriorModel("posterior", GaussianPosterior(
                sur, data, args.noise, sur.lower, sur.upper)))
            if pde is not None:
                models.append(PosteriorModel("posterior_pde", GaussianPosterior(
                    pde, data, args.noise, sur.lower, sur.upper)))
        except ValueError as exc:
            raise UsageError(f"--observed/--noise: {exc}") from None
    return models


async def serve(app: web.Application, host: str, port: int, *, names: list[str] | None = None,
                ready: Any = None) -> None:
    """Listen on host:port until SIGINT/SIGTERM, then shut down cleanly."""
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


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for bad input, 0 after a clean stop)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        port = resolve_port(args.port)
        models = build_models(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    app = make_app(models, max_workers=args.max_workers)
    try:
        asyncio.run(serve(app, args.host, port, names=[m.name for m in models]))
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {args.host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
