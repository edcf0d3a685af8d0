"""``serve-surrogate`` over UM-Bridge: a real server process on a free loopback port, called
with umbridge's own HTTPModel client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import umbridge

import surrogate
from surrogate.errors import UsageError
from surrogate.serving import GaussianPosterior, PDEModel
from surrogate.serving.cli import main, resolve_port
from tests.uq_fixtures import tiny_dcr

ROOT = Path(__file__).resolve().parents[2]
SIGMA = 0.01


@pytest.fixture(scope="module")
def dcr(tmp_path_factory):
    return tiny_dcr(tmp_path_factory.getbasetemp() / "uq-dcr")


@pytest.fixture(scope="module")
def observed(dcr, tmp_path_factory):
    _, model_dir = dcr
    m = surrogate.load(model_dir)
    d = m((m.lower + m.upper) / 2) + SIGMA * np.random.default_rng(0).normal(size=m.n_out)
    path = tmp_path_factory.mktemp("obs") / "obs.npy"
    np.save(path, d)
    return path


def start_server(args: list[str]) -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-m", "surrogate.serving", *args, "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()}")
    port = int(line.split("http://127.0.0.1:")[1].split()[0])
    return proc, f"http://127.0.0.1:{port}", port


@pytest.fixture(scope="module")
def server(dcr, observed):
    _, model_dir = dcr
    proc, url, port = start_server([str(model_dir), "--pde", "--observed", str(observed),
                                    "--noise", str(SIGMA), "--max-workers", "2"])
    yield url, port, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def inside(m, n, seed=1):
    return m.lower + (m.upper - m.lower) * np.random.default_rng(seed).random((n, m.n_in))


def test_same_values_as_load(server, dcr):
    url, _, _ = server
    m = surrogate.load(dcr[1])
    assert set(umbridge.supported_models(url)) == {"surrogate", "pde", "posterior",
                                                   "posterior_pde"}
    client = umbridge.HTTPModel(url, "surrogate")
    assert client.get_input_sizes() == [3] and client.get_output_sizes() == [882]
    assert client.supports_gradient() and client.supports_apply_jacobian()
    rng = np.random.default_rng(2)
    for y in inside(m, 3):
        out = np.array(client([y.tolist()])[0])
        np.testing.assert_allclose(out, m(y), rtol=1e-15, atol=0)
        sens = rng.normal(size=882)
        grad = np.array(client.gradient(0, 0, [y.tolist()], sens.tolist()))
        np.testing.assert_allclose(grad, m.vjp(y, sens), rtol=1e-13)
        vec = rng.normal(size=3)
        jv = np.array(client.apply_jacobian(0, 0, [y.tolist()], vec.tolist()))
        np.testing.assert_allclose(jv, m.jvp(y, vec), rtol=1e-13, atol=1e-15)


def test_posterior_and_pde_models(server, dcr, observed):
    url, _, _ = server
    m = surrogate.load(dcr[1])
    post = GaussianPosterior(m, np.load(observed), SIGMA, m.lower, m.upper)
    client = umbridge.HTTPModel(url, "posterior")
    assert client.get_output_sizes() == [1]
    y = inside(m, 1, seed=4)[0]
    lp = client([y.tolist()])[0][0]
    assert lp == pytest.approx(post.log_prob(y), rel=1e-13)
    grad = np.array(client.gradient(0, 0, [y.tolist()], [1.0]))
    h = 1e-6 * (m.upper - m.lower)
    fd = [(post.log_prob(y + h[k] * np.eye(3)[k]) - post.log_prob(y - h[k] * np.eye(3)[k]))
          / (2 * h[k]) for k in range(3)]
    np.testing.assert_allclose(grad, fd, rtol=1e-5)
    outside = m.upper + 0.1
    assert client([outside.tolist()])[0][0] == -np.inf
    pde = umbridge.HTTPModel(url, "pde")
    np.testing.assert_array_equal(np.array(pde([y.tolist()])[0]),
                                  PDEModel.from_surrogate_metadata(m.metadata)(y))


@pytest.mark.parametrize("path, body, kind", [
    ("/Evaluate", "{not json", "InvalidInput"),
    ("/Evaluate", {"name": "surrogate", "input": [[0.5, 0.2]]}, "InvalidInput"),
    ("/Evaluate", '{"name": "surrogate", "input": [[0.5, NaN, 1.0]]}', "InvalidInput"),
    ("/Evaluate", {"name": "surrogate", "input": "abc"}, "InvalidInput"),
    ("/Evaluate", {"name": "nope", "input": [[0.5, 0.2, 1.0]]}, "ModelNotFound"),
    ("/Gradient", {"name": "surrogate", "input": [[0.5, 0.2, 1.0]], "outWrt": 3, "inWrt": 0,
                   "sens": [1.0]}, "InvalidInput"),
    ("/ApplyJacobian", {"name": "surrogate", "input": [[0.5, 0.2, 1.0]], "outWrt": 0,
                        "inWrt": 0, "vec": [1.0]}, "InvalidInput"),
    ("/ApplyHessian", {"name": "surrogate", "input": [[0.5, 0.2, 1.0]]}, "UnsupportedFeature"),
    ("/Evaluate", {"name": "pde", "input": [[5.0, 0.2, 1.0]]}, "InvalidInput"),
    ("/Gradient", {"name": "posterior", "input": [[5.0, 0.2, 1.0]], "outWrt": 0, "inWrt": 0,
                   "sens": [1.0]}, "InvalidInput"),
])
def test_bad_requests_get_error_responses_and_the_server_keeps_serving(server, dcr, path,
                                                                         body, kind):
    url, _, proc = server
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.post(url + path, data=data, headers={"Content-Type": "application/json"},
                      timeout=60)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == kind and err["message"]
    m = surrogate.load(dcr[1])
    y = ((m.lower + m.upper) / 2).tolist()
    good = requests.post(url + "/Evaluate", json={"name": "surrogate", "input": [y]},
                         timeout=60).json()
    np.testing.assert_allclose(good["output"][0], m(np.array(y)), rtol=1e-15)
    assert proc.poll() is None


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                out.append(addr)
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_listens_on_loopback_only(server):
    _, port, _ = server
    assert listening_addresses(port) == ["0100007F"]          # 127.0.0.1, no IPv6/any


def test_sigterm_stops_cleanly(dcr):
    proc, url, port = start_server([str(dcr[1])])
    assert requests.get(url + "/Info", timeout=30).json()["protocolVersion"] == 1.0
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in out and "Traceback" not in err
    time.sleep(0.1)
    assert listening_addresses(port) == []


def test_port_from_environment_and_cli_errors(tmp_path, capsys, dcr):
    assert resolve_port(None, {"PORT": "5151"}) == 5151
    assert resolve_port(7000, {"PORT": "5151"}) == 7000
    assert resolve_port(None, {}) == 4242
    with pytest.raises(UsageError, match=r"\$PORT = 'x' is not an integer"):
        resolve_port(None, {"PORT": "x"})
    with pytest.raises(UsageError, match="70000 is not a TCP port"):
        resolve_port(70000, {})
    assert main([str(tmp_path / "missing")]) == 2
    assert "serve-surrogate: error:" in capsys.readouterr().err
    assert main([str(dcr[1]), "--observed", "x.npy"]) == 2
    assert "--observed and --noise go together" in capsys.readouterr().err
    np.save(tmp_path / "short.npy", np.zeros(5))
    assert main([str(dcr[1]), "--observed", str(tmp_path / "short.npy"), "--noise",
                 "0.1"]) == 2
    assert "5 values but the model has 882 outputs" in capsys.readouterr().err
    assert main([str(dcr[1]), "--max-workers", "0"]) == 2
    assert main([str(dcr[1]), "--device", "meta"]) == 2
    err = capsys.readouterr().err
    assert "serve-surrogate: error: --device 'meta': expected cpu, cuda or cuda:N" in err
    assert "Traceback" not in err
