"""The UM-Bridge source: a model served by umbridge's own server (in a subprocess, on
127.0.0.1 and a free port) used as a problem; server errors, timeouts, absent servers."""

from __future__ import annotations

import http.server
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dolfinx_solver  # noqa: F401  (before mpi4py)
import numpy as np
import pytest
import requests
import umbridge.um
from mpi4py import MPI

from solvers.errors import SolveError, SolverSettingsError
from solvers.plugins import check_deterministic_sampler, resolve_problem
from solvers.umbridge_source import UMBridgeProblem, request_timeout

SERVER = Path(__file__).with_name("umbridge_test_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The environment without the MPI launcher's variables of this process (the server
    initialises MPI through the DCR solver and must not join this job)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_"))}


def start_server(log: Path) -> tuple[subprocess.Popen, str]:
    """Start the test server; return it and its url once /Info answers."""
    port = free_port()
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=fh,
                                stderr=subprocess.STDOUT, env=clean_env())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"test server exited: {log.read_text()}")
        try:
            requests.get(f"{url}/Info", timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"test server did not start: {log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    proc, url = start_server(tmp_path_factory.mktemp("umbridge") / "server.log")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def make(url: str, model: str = "forward", **kw) -> UMBridgeProblem:
    settings = {"lower": [0.0, -1.0, 0.0], "upper": [1.0, 1.0, math.pi], **kw}
    return UMBridgeProblem(MPI.COMM_SELF, url=url, model=model, **settings)


def expected(y: np.ndarray, scale: float = 1.0) -> np.ndarray:
    a, b, c = y
    return np.array([scale * (a + b), a * b, math.sin(c), a + b + c])


def test_sizes_from_the_server_and_solve_values(server):
    p = make(server)
    assert (p.n_parameters, p.n_observables) == (3, 4)
    assert (p.input_sizes, p.output_sizes) == ([2, 1], [3, 1])
    assert p.parameter_names == ("y0", "y1", "y2")
    y = np.array([0.3, -0.7, 2.0])
    c = p.solve(y, sample=0)
    assert c.dtype == np.float64 and c.shape == (4,)
    np.testing.assert_array_equal(c, expected(y))


def test_config_is_sent_with_every_request_and_settings_rebuild(server):
    p = make(server, config={"scale": 10.0}, names=["a", "b", "angle"], timeout=5)
    y = np.array([0.25, 0.5, 1.0])
    np.testing.assert_array_equal(p.solve(y), expected(y, 10.0))
    s = p.settings()
    assert s == {"url": server, "model": "forward", "names": ["a", "b", "angle"],
                 "lower": [0.0, -1.0, 0.0], "upper": [1.0, 1.0, math.pi],
                 "config": {"scale": 10.0}, "timeout": 5.0}
    again = UMBridgeProblem(MPI.COMM_SELF, **s)
    assert again.settings() == s and again.parameter_names == ("a", "b", "angle")


def test_sampler_is_uniform_in_the_box_and_deterministic(server):
    p = make(server, lower=-2.0, upper=[1.0, 2.0, 3.0])
    y = p.sample_parameters(np.random.default_rng([5, 3]))
    np.testing.assert_array_equal(
        y, np.random.default_rng([5, 3]).uniform([-2.0] * 3, [1.0, 2.0, 3.0]))
    draws = np.array([p.sample_parameters(np.random.default_rng([0, i])) for i in range(200)])
    assert np.all(draws >= [-2, -2, -2]) and np.all(draws <= [1, 2, 3])
    np.testing.assert_array_equal(check_deterministic_sampler(p, 7, 2),
                                  np.random.default_rng([7, 2]).uniform(-2, [1.0, 2.0, 3.0]))


def test_it_is_a_plugin_with_a_box(server):
    problem = resolve_problem("solvers.umbridge_source:UMBridgeProblem")
    solver = problem.build(url=server, model="forward", lower=0, upper=1)
    info = problem.describe(solver)
    assert info.name == "umbridge" and info.parameter_names == ("y0", "y1", "y2")
    np.testing.assert_array_equal(info.parameter_box, [[0, 1]] * 3)
    assert problem.help.startswith("A model served over UM-Bridge")
    with pytest.raises(SolverSettingsError, match=r"unknown setting\(s\) \['n_cells'\]"):
        problem.build(url=server, model="forward", lower=0, upper=1, n_cells=3)


def test_a_model_that_raises_is_a_solve_error_with_the_servers_answer(server):
    p = make(server, model="fails")
    with pytest.raises(SolveError, match="500 Internal Server Error") as info:
        p.solve([0.1, 0.2, 0.3], sample=4)
    assert info.value.sample == 4 and server in str(info.value)
    assert "\n" not in str(info.value)


def test_a_server_error_message_reaches_the_solve_error(server):
    p = make(server, model="badsize")
    with pytest.raises(SolveError, match=r"InvalidOutput: Output vector 0 has invalid length! "
                                         r"Model declared 3 but returned 2"):
        p.solve([0.1, 0.2, 0.3], sample=1)


def test_a_slow_server_times_out_as_a_solve_error(server):
    p = make(server, model="slow", timeout=0.5)
    start = time.monotonic()
    with pytest.raises(SolveError, match=r"did not answer within the timeout of 0.5 s"):
        p.solve([0.1, 0.2, 0.3], sample=2)
    assert time.monotonic() - start < 4  # the server sleeps 5 s


def test_a_served_dcr_gives_bitwise_the_direct_parameters_and_observables(server):
    from solvers import make_solver
    from tests.solvers.umbridge_test_server import DCR_SETTINGS

    direct = make_solver("dcr", **DCR_SETTINGS)
    bounds = direct.parameter_bounds
    remote = UMBridgeProblem(MPI.COMM_SELF, url=server, model="dcr", lower=bounds[:, 0].tolist(),
                             upper=bounds[:, 1].tolist(), names=list(direct.parameter_names))
    assert (remote.n_parameters, remote.n_observables) == (3, 18)
    for i in range(4):
        y = remote.sample_parameters(np.random.default_rng([11, i]))
        np.testing.assert_array_equal(
            y, direct.sample_parameters(np.random.default_rng([11, i])), strict=True)
        np.testing.assert_array_equal(remote.solve(y, sample=i), direct.solve(y), strict=True)


def test_the_timeout_applies_only_inside_the_source(server, monkeypatch):
    seen = []
    real_post = requests.post

    def spy(url, **kwargs):
        seen.append(kwargs.get("timeout"))
        return real_post(url, **kwargs)

    monkeypatch.setattr(requests, "post", spy)
    make(server, timeout=7).solve([0.1, 0.2, 0.3])
    assert seen and set(seen) == {7.0}
    seen.clear()
    umbridge.um.HTTPModel(server, "forward")([[0.1, 0.2], [0.3]])  # another client: untouched
    assert seen and set(seen) == {None}
    with request_timeout(3.0):
        umbridge.um.HTTPModel(server, "forward")([[0.1, 0.2], [0.3]])
    assert seen[-1] == 3.0


def test_absent_server_is_refused_at_construction():
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(SolverSettingsError, match=f"cannot reach the UM-Bridge server at {url}"):
        make(url)
    assert time.monotonic() - start < 10


def test_unknown_model_and_unsupported_evaluate_are_refused_at_construction(server):
    served = r"\['badsize', 'dcr', 'fails', 'forward', 'noeval', 'slow'\]"
    with pytest.raises(SolverSettingsError,
                       match=f"does not serve a model 'nope'; it serves {served}"):
        make(server, model="nope")
    with pytest.raises(SolverSettingsError, match="'noeval' .* does not support Evaluate"):
        make(server, model="noeval")


def test_a_server_that_is_not_umbridge_is_refused_at_construction():
    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Html)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with pytest.raises(SolverSettingsError, match="did not answer with JSON but with "
                                                      "'<html>hello</html>'"):
            make(url)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("kw, message", [
    ({"url": "127.0.0.1:4242"}, "url must be an http:// or https:// address"),
    ({"model": ""}, "model must be a model name"),
    ({"timeout": 0}, "timeout must be a number of seconds > 0"),
    ({"timeout": "fast"}, "timeout must be a number of seconds > 0"),
    ({"config": [1]}, "config must be a table"),
    ({"lower": [0, 0]}, r"lower must be a list of 3 numbers \(the model has 3 inputs\)"),
    ({"upper": [1, 1, math.inf]}, r"upper\[2\] = inf is not finite"),
    ({"lower": 1.0}, r"lower\[0\] = 1 must be below upper\[0\] = 1"),
    ({"names": ["a", "a", "b"]}, "names must be 3 distinct non-empty strings"),
])
def test_bad_settings_are_refused(server, kw, message):
    settings = {"url": server, **kw}
    with pytest.raises(SolverSettingsError, match=message):
        make(**settings)


@pytest.mark.mpi
def test_two_ranks_get_rank_zeros_answer_and_errors(tmp_path_factory):
    comm = MPI.COMM_WORLD
    proc, url, error = None, None, None
    if comm.rank == 0:
        try:
            proc, url = start_server(tmp_path_factory.mktemp("umbridge") / "server.log")
        except RuntimeError as exc:  # told to rank 1 too, which would wait forever
            error = str(exc)
    url, error = comm.bcast((url, error))
    if error is not None:
        pytest.fail(error)
    try:
        p = UMBridgeProblem(comm, url=url, model="forward", lower=0, upper=1)
        assert (p.n_parameters, p.n_observables) == (3, 4)
        y = np.array([0.5, 0.25, 1.5])
        c = p.solve(y)
        np.testing.assert_array_equal(c, expected(y))
        assert all(np.array_equal(c, other) for other in comm.allgather(c))
        bad = UMBridgeProblem(comm, url=url, model="badsize", lower=0, upper=1)
        with pytest.raises(SolveError, match="InvalidOutput") as info:
            bad.solve(y, sample=9)
        assert info.value.sample == 9 and info.value.reason.startswith("the UM-Bridge server")
        with pytest.raises(SolverSettingsError, match="does not serve a model 'nope'"):
            UMBridgeProblem(comm, url=url, model="nope", lower=0, upper=1)
    finally:
        comm.Barrier()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
