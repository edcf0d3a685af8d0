"""serve-surrogate under hostile but realistic clients (issue 20), on 127.0.0.1 only.

One server (a float32 model: the torch path, ``--max-workers 4``, ``--timeout 1``) takes
concurrent ApplyJacobian requests (they used to get 500s and wrong numbers), malformed JSON of
every kind (400-digit numbers, a 5000-digit inWrt, nesting 100,000 deep, a list as model name:
plain-text 500s before), oversized bodies, half-open and slow connections and clients that
drop mid-body (tracebacks before), a Gradient whose result overflows (-Infinity before).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

import surrogate
from surrogate import NeuralODE, Normalizer, SeparableModel, save_surrogate
from surrogate.errors import UsageError
from surrogate.serving.cli import build_models, build_parser

ROOT = Path(__file__).resolve().parents[2]
N_OUT = 40
BOX = {"names": ["a", "b", "c"], "lower": [0.0, 0.0, 0.0], "upper": [1.0, 1.0, 1.0],
       "box": "test"}
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    g = torch.Generator().manual_seed(3)
    norm = Normalizer(3, N_OUT, center_targets=True).fit(
        torch.rand(30, 3, dtype=torch.float64, generator=g),
        1 + torch.rand(30, N_OUT, dtype=torch.float64, generator=g))
    model = SeparableModel(NeuralODE(3, 8, 4, generator=g, dtype=torch.float32), N_OUT, norm)
    with torch.no_grad():
        model.W.normal_(generator=g)
    folder = tmp_path_factory.mktemp("f32") / "model"
    save_surrogate(model, folder, {"method": "test"},
                   extra={"inputs": BOX, "outputs": {"names": None, "coords": {}}})
    return folder


class Server:
    def __init__(self, args: list[str], stderr: Path) -> None:
        self._err = stderr.open("w")
        self.stderr = stderr
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "surrogate.serving", *args, "--port", "0"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=self._err, text=True)
        self.line = self.proc.stdout.readline()
        if "serving" not in self.line:
            self.close()
            raise AssertionError(f"no server: {self.line!r} {stderr.read_text()}")
        self.port = int(self.line.split(" (UM-Bridge")[0].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        self._err.flush()
        return self.stderr.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._err.close()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    s = Server([str(model_dir), "--max-workers", "4", "--timeout", str(TIMEOUT)],
               tmp_path_factory.mktemp("log") / "stderr.txt")
    yield s
    s.close()


def post(url: str, path: str, body: str | bytes) -> requests.Response:
    return requests.post(url + path, data=body, timeout=60,
                         headers={"Content-Type": "application/json"})


def test_concurrent_apply_jacobian_equals_the_model(server, model_dir):
    m = surrogate.load(model_dir)
    rng = np.random.default_rng(0)
    ys, vs = rng.random((40, 3)), rng.normal(size=(40, 3))

    def one(i: int) -> requests.Response:
        return post(server.url, "/ApplyJacobian", json.dumps(
            {"name": "surrogate", "input": [ys[i].tolist()], "outWrt": 0, "inWrt": 0,
             "vec": vs[i].tolist()}))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(40)))
    assert [r.status_code for r in answers] == [200] * 40
    for i, r in enumerate(answers):
        np.testing.assert_allclose(r.json()["output"], m.jvp(ys[i], vs[i]), rtol=1e-6,
                                   atol=1e-7, err_msg=f"request {i}")


@pytest.mark.parametrize("path, body, status", [
    ("/Evaluate", '{"name": "surrogate", "input": [[1' + "0" * 400 + ", 0.5, 0.5]]}", 400),
    ("/Evaluate", '{"name": "surrogate", "input": [[-1' + "0" * 5000 + ", 0.5, 0.5]]}", 400),
    ("/Gradient", '{"name": "surrogate", "input": [[0.5, 0.5, 0.5]], "outWrt": 0, "inWrt": 1'
                  + "0" * 5000 + ', "sens": [1.0]}', 400),
    ("/Gradient", '{"name": "surrogate", "input": [[0.5, 0.5, 0.5]], "outWrt": 0, "inWrt": 1'
                  + "0" * 400 + ', "sens": [1.0]}', 400),
    ("/Evaluate", "[" * 30_000 + "]" * 30_000, 400),           # RecursionError in the parser
    ("/Evaluate", "[" * 100_000 + "]" * 100_000, 413),         # larger than the limit
    ("/Evaluate", '{"name": ["surrogate"], "input": [[0.5, 0.5, 0.5]]}', 400),
    ("/Evaluate", '{"name": {"a": 1}, "input": [[0.5, 0.5, 0.5]]}', 400),
    ("/InputSizes", '{"name": 12}', 400),
    ("/Evaluate", b'{"name": "surrogate", "input": [[0.5, 0.5, \xff]]}', 400),
    ("/Gradient", json.dumps({"name": "surrogate", "input": [[0.5, 0.5, 0.5]], "outWrt": 0,
                              "inWrt": 0, "sens": [1e308] * N_OUT}), 400),
    ("/ApplyJacobian", json.dumps({"name": "surrogate", "input": [[0.5, 0.5, 0.5]],
                                   "outWrt": 0, "inWrt": 0, "vec": [1e308, 1e308, 1e308]}),
     400),
])
def test_malformed_requests_get_umbridge_error_bodies(server, path, body, status):
    r = post(server.url, path, body)
    assert r.status_code == status, r.text[:200]
    error = r.json()["error"]
    assert error["type"] == "InvalidInput" and error["message"]
    assert len(error["message"]) < 400                    # a 5000-digit value is not echoed
    assert "Traceback" not in server.log()


def test_oversized_body_is_refused_without_reading_it(server):
    """A 20 MB body: 413 with a UM-Bridge body once the limit is read, the server stays
    small and responsive."""
    from surrogate.serving.app import default_request_limit

    limit = default_request_limit([_Sizes()])
    assert limit == 64 * 1024 + 64 * (3 + N_OUT)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 20000000\r\n\r\n" + b'{"name": "surrogate", "input": [[')
    answer = b""
    try:
        for _ in range(200):
            s.sendall(b"0.5, " * 2000)
    except OSError:
        pass                                               # the server closed the connection
    try:
        answer = s.recv(65536)
    except OSError:
        pass
    s.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b'"InvalidInput"' in answer and b"--max-request-bytes" in answer
    rss = int(next(line.split()[1] for line in
                   Path(f"/proc/{server.proc.pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))) * 1024
    assert rss < 1.5 * 2**30, rss
    assert requests.get(server.url + "/Info", timeout=30).status_code == 200


class _Sizes:
    def get_input_sizes(self, config):
        return [3]

    def get_output_sizes(self, config):
        return [N_OUT]


def _closed_after(sockets: list[socket.socket], limit: float) -> float:
    """Seconds until the server closed every socket (``limit`` if not all)."""
    start = time.monotonic()
    open_ = list(sockets)
    while open_ and time.monotonic() - start < limit:
        for s in list(open_):
            s.settimeout(0.05)
            try:
                if not s.recv(4096):
                    open_.remove(s)
            except TimeoutError:
                pass
            except OSError:
                open_.remove(s)
    for s in sockets:
        s.close()
    return time.monotonic() - start


def test_half_open_and_slow_connections_are_closed(server):
    half_open = []
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: x\r\n")         # headers never end
        half_open.append(s)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    slow.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"name\": ")                # body never ends
    t = _closed_after(half_open, 30.0)
    assert t < 10.0, f"half-open connections held for {t:.1f} s (timeout {TIMEOUT} s)"
    slow.settimeout(30)
    answer = slow.recv(65536)
    slow.close()
    assert answer.startswith(b"HTTP/1.1 408") and b'"InvalidInput"' in answer, answer[:200]
    assert requests.get(server.url + "/Info", timeout=30).status_code == 200


def test_dropped_clients_cost_at_most_one_log_line_each(server):
    before = server.log().count("\n")
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 5000\r\n\r\n" + b"[" * 1000)
        s.close()
    time.sleep(1.0)
    log = server.log()
    assert log.count("\n") - before <= 20, log[-2000:]
    assert "Traceback" not in log and "Error handling request" not in log
    assert requests.get(server.url + "/Info", timeout=30).status_code == 200


def refused(argv: list[str]) -> str:
    """The UsageError message for ``argv`` (models are built, nothing is served: a
    regression must not leave a server running in the test process)."""
    args = build_parser().parse_args(argv)
    with pytest.raises(UsageError) as info:
        build_models(args)
    return str(info.value)


def test_host_and_url_forms(model_dir, tmp_path):
    from surrogate.serving.app import format_url

    assert refused([str(model_dir), "--host", ""]).startswith("--host is empty")
    assert format_url("::1", 4242) == "http://[::1]:4242"
    assert format_url("127.0.0.1", 80) == "http://127.0.0.1:80"
    assert format_url("fe80::1%eth0", 1, scheme="") == "[fe80::1%eth0]:1"
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    s = Server([str(model_dir), "--host", "::1"], tmp_path / "stderr.txt")
    try:
        assert f"on http://[::1]:{s.port} " in s.line
        assert requests.get(f"http://[::1]:{s.port}/Info", timeout=30).status_code == 200
    finally:
        s.close()


def test_complex_observed_data_and_bad_limits_are_refused(model_dir, tmp_path):
    np.save(tmp_path / "c.npy", np.ones(N_OUT) * (1 + 1j))
    assert "holds complex values" in refused(
        [str(model_dir), "--observed", str(tmp_path / "c.npy"), "--noise", "1"])
    assert "--max-request-bytes must be >= 1024" in refused(
        [str(model_dir), "--max-request-bytes", "10"])
    assert "--timeout must be a positive number" in refused([str(model_dir), "--timeout", "nan"])
