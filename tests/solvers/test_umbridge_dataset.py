"""``generate-dataset umbridge``: any UM-Bridge model as a data source, end to end.

* Against our own ``serve-surrogate --pde`` (a tiny DCR model's PDE): the dataset generated
  through UM-Bridge on 2 ranks equals the direct DCR dataset bit for bit.
* Against umbridge's own server (tests/solvers/umbridge_test_server.py): a model that fails or
  is too slow gives failed samples with the server's message and the job goes on; an absent
  server or an unknown model is refused before any work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets.storage import FAILED, read_state
from tests.datasets.cli_helpers import clean_env, command
from tests.solvers.test_umbridge_source import free_port, start_server
from tests.uq_fixtures import tiny_dcr

ROOT = Path(__file__).resolve().parents[2]
BOX = ["--set", "lower=[0.0, -1.0, 0.0]", "--set", "upper=[1.0, 1.0, 3.0]"]


def env() -> dict[str, str]:
    e = clean_env()
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    return e


def generate(args: list[str], n_ranks: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command([*args, "--no-progress"], n_ranks), capture_output=True,
                          text=True, env=env(), timeout=300)


@pytest.fixture(scope="module")
def test_server(tmp_path_factory):
    proc, url = start_server(tmp_path_factory.mktemp("umbridge") / "server.log")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_dcr_through_serve_surrogate_pde_is_bitwise_the_direct_dataset(tmp_path,
                                                                      tmp_path_factory) -> None:
    _, model_dir = tiny_dcr(tmp_path_factory.getbasetemp() / "uq-dcr")  # shared, see test_serve
    server = subprocess.Popen([sys.executable, "-m", "surrogate.serving", str(model_dir),
                               "--pde", "--port", "0", "--max-workers", "2"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env())
    try:
        line = server.stdout.readline()
        assert "serving" in line, server.stderr.read()
        url = "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split()[0]
        from solvers import make_solver

        box = make_solver("dcr", n_cells=[12, 12, 6]).parameter_bounds
        remote = generate(["umbridge", "--set", f'url="{url}"', "--set", 'model="pde"',
                           "--set", f"lower={box[:, 0].tolist()}",
                           "--set", f"upper={box[:, 1].tolist()}",
                           "--set", 'names=["depth", "size", "angle"]',
                           "--samples", "8", "--seed", "5", "--out", tmp_path / "remote.h5"],
                          n_ranks=2)
        assert remote.returncode == 0, remote.stderr
        assert "umbridge -> " in remote.stdout and "8 ok, 0 failed" in remote.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    direct = generate(["dcr", "--set", "n_cells=[12,12,6]", "--samples", "8", "--seed", "5",
                       "--out", tmp_path / "direct.h5"])
    assert direct.returncode == 0, direct.stderr
    with h5py.File(tmp_path / "remote.h5") as r, h5py.File(tmp_path / "direct.h5") as d:
        for key in ("y", "c", "status"):
            np.testing.assert_array_equal(r[key][()], d[key][()], err_msg=key, strict=True)
        assert set(r["solver_rank"][()]) == {0, 1}  # both ranks sent requests
        assert r["parameter_names"].asstr()[()].tolist() == ["depth", "size", "angle"]


@pytest.mark.parametrize("model, extra, reason", [
    ("fails", [], "500 Internal Server Error"),
    ("badsize", [], "InvalidOutput: Output vector 0 has invalid length! Model declared 3 but "
                    "returned 2"),
    ("slow", ["--set", "timeout=0.5"], "did not answer within the timeout of 0.5 s"),
])
def test_server_errors_and_timeouts_are_failed_samples(test_server, tmp_path, model, extra,
                                                      reason) -> None:
    out = tmp_path / "d.h5"
    proc = generate(["umbridge", "--set", f'url="{test_server}"', "--set", f'model="{model}"',
                     *BOX, *extra, "--samples", "2", "--seed", "1", "--out", out])
    assert proc.returncode == 0, proc.stderr
    assert "2 samples, 0 ok, 2 failed" in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "generate-dataset: 2 samples failed; first: sample 0: the UM-Bridge server at "), lines
    assert reason in lines[0]
    state = read_state(out)
    assert np.all(state.status == FAILED) and all(reason in r for r in state.failure_reason)


def test_a_working_model_makes_a_dataset(test_server, tmp_path) -> None:
    out = tmp_path / "d.h5"
    proc = generate(["umbridge", "--set", f'url="{test_server}"', "--set", 'model="forward"',
                     *BOX, "--set", "config={scale = 2.0}", "--samples", "5", "--seed", "2",
                     "--out", out])
    assert proc.returncode == 0, proc.stderr
    state = read_state(out)
    y = np.array([np.random.default_rng([2, i]).uniform([0, -1, 0], [1, 1, 3])
                  for i in range(5)])
    np.testing.assert_array_equal(state.y, y)
    a, b, c = y.T
    np.testing.assert_array_equal(state.c, np.column_stack([2 * (a + b), a * b, np.sin(c),
                                                            a + b + c]))


@pytest.mark.parametrize("url, model, message", [
    (None, "forward", "cannot reach the UM-Bridge server at"),
    ("server", "nope", "does not serve a model 'nope'"),
])
def test_absent_server_or_unknown_model_refused_before_any_work(test_server, tmp_path, url,
                                                                model, message) -> None:
    url = test_server if url == "server" else f"http://127.0.0.1:{free_port()}"
    proc = generate(["umbridge", "--set", f'url="{url}"', "--set", f'model="{model}"', *BOX,
                     "--samples", "2", "--out", tmp_path / "d.h5"])
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("generate-dataset: error: invalid umbridge "
                                                   "settings: "), lines
    assert message in lines[0]
    assert not (tmp_path / "d.h5").exists()
