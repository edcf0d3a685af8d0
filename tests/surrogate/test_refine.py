"""refine-surrogate on a cheap problem (coarse DCR mesh, tiny budgets): reaches its target,
continues after kill -9 to the same result, refuses bad input (issue 19)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.ensemble_fixtures import tiny_ensemble

ROOT = Path(__file__).resolve().parents[2]
TARGET = 0.12          # the tiny ensemble starts at ~0.16 and gets there after ~2 rounds
ARGS = ["--target", str(TARGET), "--max-solves", "100", "--batch", "20",
        "--check-samples", "30", "--no-progress"]


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    return tiny_ensemble(tmp_path_factory.getbasetemp() / "ens-dcr")


def refine_cmd(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "surrogate.refinement.cli", str(model_dir), "--out",
            str(out), *ARGS, *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def rounds(out: Path) -> list[dict]:
    return json.loads((out / "state.json").read_text())["rounds"]


def essence(r: dict) -> tuple:
    """What must not depend on an interruption (not the timings)."""
    sel = r.get("selection") or {}
    member_weights = None
    if r["round"] > 0:
        meta = json.loads((Path(r["model"]) / "metadata.json").read_text())
        member_weights = [json.loads((Path(r["model"]) / m["path"] / "metadata.json")
                                     .read_text())["weights_sha256"]
                          for m in meta["ensemble"]["members"]]
    return (r["round"], r["n_solves"], r["n_added"], r["error"], sel.get("parameters_sha256"),
            member_weights)


@pytest.fixture(scope="module")
def reference(ens, tmp_path_factory):
    _, _, model_dir = ens
    out = tmp_path_factory.mktemp("refine") / "a"
    proc = run(refine_cmd(model_dir, out))
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_reaches_the_target(reference):
    out, stdout = reference
    state = json.loads((out / "state.json").read_text())
    rs = state["rounds"]
    assert state["stop_reason"] == "target"
    assert rs[0]["error"] > TARGET >= rs[-1]["error"]
    assert all(r["error"] > TARGET for r in rs[:-1])
    assert rs[-1]["n_added"] == 20 * (len(rs) - 1) < 100
    assert [r["n_solves"] - rs[0]["n_solves"] for r in rs] == [r["n_added"] for r in rs]
    # the growing data: the last round's file holds base + every batch, all in training
    from datasets import open_dataset
    from datasets.split_data import load_split_data

    base = load_split_data(Path(rs[0]["model"]).parent / "dcr.h5")
    grown = load_split_data(out / "data.h5")
    assert grown.y["train"].shape[0] == base.y["train"].shape[0] + rs[-1]["n_added"]
    assert np.array_equal(grown.y["validation"], base.y["validation"])
    last = len(rs) - 1
    sel = np.load(out / "rounds" / f"{last:03d}" / "selection.npz")
    batch = open_dataset(out / "rounds" / f"{last:03d}" / "batch.h5")
    assert np.array_equal(batch["y"].values, sel["candidates"][sel["selected"]])
    assert sel["scores"][sel["selected"]].min() >= np.delete(sel["scores"],
                                                              sel["selected"]).max()
    assert (out / "refine.png").stat().st_size > 10_000
    assert (out / "model").read_text().strip() == rs[-1]["model"]
    assert "stopped by target" in stdout
    # the refined model is a normal ensemble, and evaluate-surrogate can solve for it
    import surrogate

    m = surrogate.load(rs[-1]["model"])
    assert m.has_std and m.predict(m.lower[None], return_std=True)[1].shape == (1, 882)


def test_rerun_after_the_end_does_nothing(reference):
    out, _ = reference
    before = rounds(out)
    proc = run(refine_cmd(Path(before[0]["model"]), out))
    assert proc.returncode == 0, proc.stderr
    assert [essence(r) for r in rounds(out)] == [essence(r) for r in before]


def test_kill_9_and_rerun_gives_the_same_result(ens, reference, tmp_path):
    _, _, model_dir = ens
    out = tmp_path / "b"
    proc = subprocess.Popen(refine_cmd(model_dir, out), cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "rounds" / "002" / "model" / "members" / "1"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = rounds(out)
    assert len(done) < len(rounds(reference[0])), "the run ended before the kill"
    again = run(refine_cmd(model_dir, out))
    assert again.returncode == 0, again.stderr
    assert [essence(r) for r in rounds(out)] == [essence(r) for r in rounds(reference[0])]


def test_two_ranks_give_the_same_result(ens, reference, tmp_path):
    """mpiexec -n 2: both ranks solve, rank 0 trains; the rounds equal the 1-rank run."""
    from tests.datasets.cli_helpers import clean_env

    _, _, model_dir = ens
    out = tmp_path / "two"
    proc = subprocess.run([str(Path(sys.executable).parent / "mpiexec"), "-n", "2",
                           *refine_cmd(model_dir, out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600,
                          env={**clean_env(), "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("stopped by target") == 1                  # rank 0 prints
    import h5py

    with h5py.File(out / "rounds" / "001" / "batch.h5", "r") as f:
        assert set(f["solver_rank"][()]) == {0, 1}
    assert [essence(r) for r in rounds(out)] == [essence(r) for r in rounds(reference[0])]


def test_uniform_strategy_takes_the_first_candidates(ens, tmp_path):
    _, _, model_dir = ens
    out = tmp_path / "u"
    proc = run(refine_cmd(model_dir, out, "--strategy", "uniform", "--max-solves", "20",
                          "--target", "1e-9"))
    assert proc.returncode == 0, proc.stderr
    state = json.loads((out / "state.json").read_text())
    assert state["stop_reason"] == "budget" and state["rounds"][-1]["n_added"] == 20
    assert np.array_equal(np.load(out / "rounds" / "001" / "selection.npz")["selected"],
                          np.arange(20))


@pytest.fixture
def _keep_signal_handlers():
    """refine-surrogate's main installs SIGTERM/SIGINT handlers."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_bad_input(ens, reference, tmp_path, capsys, _keep_signal_handlers):
    from surrogate.refinement.cli import main

    _, _, model_dir = ens
    cases = [
        (refine_cmd(model_dir / "members" / "0", tmp_path / "x"), "is a single model"),
        (refine_cmd(model_dir, tmp_path / "x", "--check-seed", "3"),
         "--check-seed 3 is the training data's seed"),
        (refine_cmd(model_dir, tmp_path / "x", "--candidates", "5"),
         "--candidates 5: must be at least --batch"),
        (refine_cmd(model_dir, reference[0], "--batch", "10"), "holds a refinement run with "
         "other options"),
        (refine_cmd(model_dir, tmp_path / "x", "--target", "-1"), "--target -1.0: must be"),
    ]
    for cmd, text in cases:
        assert main(cmd[3:]) == 2, cmd
        err = capsys.readouterr().err
        assert err.startswith("refine-surrogate: error: ") and text in err, err
    assert not (tmp_path / "x").exists()
