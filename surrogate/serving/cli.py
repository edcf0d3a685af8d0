"""``serve-surrogate``: a trained surrogate (and the PDE) over the UM-Bridge protocol 1.0.

    serve-surrogate MODEL_DIR [--port 4242] [--host 127.0.0.1] [--pde] [--max-workers K]
                    [--observed data.npy --noise SIGMA] [--device cpu]
                    [--max-request-bytes N] [--timeout SECONDS]

Models served (UM-Bridge names):

``surrogate``     y (d,) -> c (m,): Evaluate, Gradient (J^T sens) and ApplyJacobian (J vec)
                  from automatic differentiation of the network.
``pde``           with ``--pde``: the PDE the surrogate was trained for (same problem, plugin
                  and solver settings as its training data; a plugin that changed since is
                  refused, naming what changed, unless ``--allow-changed-plugin``),
                  Gradient/ApplyJacobian by finite differences
                  (:mod:`surrogate.serving.pde_model`): the two fidelities side by side.
                  ``--pde-problem SPEC`` names the problem instead (any spec; for a model
                  trained on data without solver provenance: with its default settings).
``posterior``     with ``--observed`` and ``--noise``: y -> [log pi(y | d)] with a Gaussian
                  likelihood and a uniform prior on the training box, and its Gradient
                  (:mod:`surrogate.serving.posterior`); -inf (JSON ``-Infinity``) outside the
                  box.
``posterior_pde`` with ``--pde`` too: the same posterior on the PDE.
``surrogate_std`` when MODEL_DIR holds an ensemble (``train-surrogate --ensemble K``): y ->
                  the predictive standard deviation (m,), physical units (Evaluate only).

The server (:mod:`surrogate.serving.app`) listens on 127.0.0.1 unless ``--host`` says
otherwise (unlike ``umbridge.serve_models``). The port is ``--port``, else ``$PORT``
(UM-Bridge's HPC convention), else 4242; ``--port 0`` picks a free port (printed). Ctrl-C or
SIGTERM stop it cleanly (exit status 0); bad command-line input exits with status 2
(``serve-surrogate: error: ...``). An empty ``--host`` (an unset ``$HOST``) is refused: it
would listen on every interface; name ``0.0.0.0`` or ``::`` to mean that. IPv6 addresses are
printed in brackets (``http://[::1]:4242``).

Denial of service (:mod:`surrogate.serving.app`): ``--max-request-bytes`` (default 64 KiB +
64 bytes per number a request carries, :func:`~surrogate.serving.app.default_request_limit`;
121 KiB for the DCR surrogate) and ``--timeout`` (default 10 s for the request headers and
again for the body) bound what one client can make the server hold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import umbridge

from solvers.common.cli import BAD_INPUT, FAILURE, OK, RankZeroParser, whole_number
from solvers.errors import MPIStartError, UsageError
from solvers.plugins import ALLOW_CHANGED_OPTION, problems_help
from surrogate.serving.adapters import ForwardModel, PosteriorModel
from surrogate.serving.app import DEFAULT_TIMEOUT, PROG, format_url, make_app, serve

__all__ = ["build_models", "build_parser", "main", "read_observed", "resolve_port"]

DEFAULT_PORT = 4242


def build_parser() -> argparse.ArgumentParser:
    """The ``serve-surrogate`` argument parser."""
    p = RankZeroParser(
        prog=PROG, description="Serve a trained surrogate (and optionally the PDE and a "
        "posterior) over the UM-Bridge protocol 1.0.", epilog=problems_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR", help="surrogate model directory")
    p.add_argument("--port", type=int, default=None,
                   help="TCP port (default: $PORT, else 4242; 0 picks a free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--pde", action="store_true",
                   help="also serve the PDE (same solver settings as the training data) as "
                   "model 'pde'")
    p.add_argument("--pde-problem", metavar="PROBLEM",
                   help="serve this problem as model 'pde' (implies --pde): a registered name, "
                   "module:Class or file.py:Class; the recorded settings if the model has "
                   "solver provenance (the plugin checked against the recorded one), else its "
                   "defaults")
    p.add_argument(ALLOW_CHANGED_OPTION, action="store_true",
                   help="--pde: use the recorded plugin even if its code (file SHA-256, "
                   "version) changed since the training data was made")
    p.add_argument("--max-workers", type=int, default=1, metavar="K",
                   help="threads evaluating requests (default 1; PDE solves are serialised)")
    p.add_argument("--observed", metavar="DATA", help="observed data (.npy or text, m values):"
                   " serve the log-posterior as model 'posterior'")
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="noise standard deviation of the Gaussian likelihood (with --observed)")
    p.add_argument("--device", default="cpu", help="torch device of the surrogate's large "
                   "batches (cpu, cuda, cuda:N)")
    p.add_argument("--max-request-bytes", type=whole_number, metavar="N",
                   help="largest request body accepted (default: 64 KiB + 64 bytes per number "
                   "a request of the served models carries)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="seconds a client may take to send its request headers, and again its "
                   f"body (default {DEFAULT_TIMEOUT:g})")
    return p


def resolve_port(arg: int | None, environ: Mapping[str, str] | None = None) -> int:
    """``--port``, else ``$PORT``, else 4242.

    Raises
    ------
    UsageError
        ``$PORT`` not an integer, or a port outside 0-65535.
    """
    environ = os.environ if environ is None else environ
    if arg is not None:
        port, source = arg, "--port"
    elif environ.get("PORT"):
        try:
            port, source = int(environ["PORT"]), "$PORT"
        except ValueError:
            raise UsageError(f"$PORT = {environ['PORT']!r} is not an integer") from None
    else:
        port, source = DEFAULT_PORT, "default"
    if not 0 <= port <= 65535:
        raise UsageError(f"{source} {port} is not a TCP port (0-65535)")
    return port


def read_observed(path: str) -> np.ndarray:
    """Observed data d, shape (m,), from a ``.npy`` file or a text file (``--observed``).

    Raises
    ------
    UsageError
        No such file, or a file NumPy cannot read.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--observed {path}: no such file")
    try:
        data = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, ndmin=1)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"--observed {path}: cannot read ({exc})") from None
    data = np.asarray(data)
    if data.dtype.kind not in "iuf":
        kind = "complex" if data.dtype.kind == "c" else f"dtype {data.dtype}"
        raise UsageError(f"--observed {path} holds {kind} values; observed data must be real "
                         "numbers")
    return data.astype(np.float64).ravel()


def _check_options(args: argparse.Namespace) -> None:
    if not args.host.strip():
        raise UsageError("--host is empty (an unset $HOST?): it would listen on every "
                         "interface; give an address (default 127.0.0.1; 0.0.0.0 or :: for all "
                         "interfaces)")
    if args.max_workers < 1:
        raise UsageError(f"--max-workers must be >= 1, got {args.max_workers}")
    if args.max_request_bytes is not None and args.max_request_bytes < 1024:
        raise UsageError(f"--max-request-bytes must be >= 1024, got {args.max_request_bytes}")
    if not 0 < args.timeout < float("inf"):
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if (args.observed is None) != (args.noise is None):
        raise UsageError("--observed and --noise go together")


def build_models(args: argparse.Namespace) -> list[umbridge.Model]:
    """The UM-Bridge models the command line asks for (surrogate, pde, posteriors).

    Raises
    ------
    UsageError
        Bad options, an unusable model directory or device, no solver settings recorded
        (``--pde``), or observed data / noise the posterior refuses.
    """
    from surrogate.device import resolve_device
    from surrogate.errors import SurrogateFormatError
    from surrogate.serving.posterior import GaussianPosterior
    from surrogate.uq_model import load

    _check_options(args)
    device = resolve_device(args.device)
    try:
        sur = load(args.model_dir, device=device)
    except SurrogateFormatError as exc:
        raise UsageError(str(exc)) from None
    models: list[umbridge.Model] = [ForwardModel("surrogate", sur)]
    if sur.has_std:                          # an ensemble: its std as model "surrogate_std"
        from surrogate.serving.uncertainty import StdModel

        models.append(StdModel(sur))
    pde = None
    if args.pde or args.pde_problem:
        try:
            pde = _pde_model(sur.metadata, args)
        except ValueError as exc:
            raise UsageError(f"--pde: {exc}") from None
        if (pde.n_in, pde.n_out) != (sur.n_in, sur.n_out):
            raise UsageError(f"--pde: {pde.info.label} maps {pde.n_in} parameters to "
                             f"{pde.n_out} observables, the surrogate {sur.n_in} to {sur.n_out}")
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


def _pde_model(metadata: dict, args: argparse.Namespace) -> Any:
    """The ``pde`` model: the recorded problem, or ``--pde-problem`` (recorded settings and
    plugin check when the model has solver provenance)."""
    from surrogate.metadata import solver_provenance
    from surrogate.serving.pde_model import PDEModel

    option = ALLOW_CHANGED_OPTION
    if args.pde_problem is None:
        return PDEModel.from_surrogate_metadata(
            metadata, allow_changed_plugin=args.allow_changed_plugin, option=option)
    prov = solver_provenance(metadata)
    if prov is None:
        return PDEModel(args.pde_problem)
    from solvers.plugins import check_unchanged

    model = PDEModel(args.pde_problem, prov.settings)
    model.plugin_changes = check_unchanged(prov.plugin, prov.settings, model.info,
                                           allow=args.allow_changed_plugin, option=option,
                                           what="the surrogate's training data")
    return model


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
        return BAD_INPUT
    except MPIStartError as exc:               # --pde in an environment MPI cannot start in
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return FAILURE
    app = make_app(models, max_workers=args.max_workers,
                   max_request_bytes=args.max_request_bytes, timeout=args.timeout)
    try:
        asyncio.run(serve(app, args.host, port, names=[m.name for m in models],
                          timeout=args.timeout))
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {format_url(args.host, port, scheme='')}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return BAD_INPUT
    return OK


if __name__ == "__main__":
    sys.exit(main())
