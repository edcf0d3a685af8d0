"""examples/demo_pipeline.py end to end through the real commands, on a tiny configuration.

CDR on a 12 x 12 mesh, 12 samples on 2 ranks, a short GNvpro run: the printed table must carry
the numbers of the tools' own JSON files (summary.json, report.json, stages.json), the
outputs must exist, and a rerun must reuse the finished stages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "examples" / "demo_pipeline.py"
SAMPLES, EVAL_SAMPLES, RANKS = 12, 4, 2
TRAIN_TOML = "[model]\nlevels = [2, 4]\n[gnvpro]\nwork_units_per_level = 5\n"
NUM = r"([-+0-9.eE]+|-)"


def clean_env() -> dict[str, str]:
    """This process's environment without its MPI launcher's variables, with this tree first
    on PYTHONPATH (the console scripts then import this tree's code)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_demo(out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    toml = out.parent / "train.toml"
    toml.write_text(TRAIN_TOML)
    cmd = [sys.executable, str(DRIVER), "--out", str(out), "--samples", str(SAMPLES),
           "--ranks", str(RANKS), "--eval-samples", str(EVAL_SAMPLES), "--set", "n_cells=12",
           "--train-config", str(toml), "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(),
                          cwd=ROOT)


def table_row(text: str, label: str) -> list[str]:
    """The numbers of the table row that starts with ``label``."""
    m = re.search(rf"^  {re.escape(label)}\s+(.*)$", text, re.M)
    assert m is not None, f"no row {label!r} in:\n{text}"
    return m.group(1).split()


def assert_close(printed: str, value: float) -> None:
    """A number printed with 4 significant digits equals the JSON value."""
    assert float(printed) == pytest.approx(value, rel=6e-4, abs=1e-300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Dataset and training stages of the tiny demo (twice: the second run reuses them)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    first = run_demo(out, "--stop-after", "train")
    assert first.returncode == 0, first.stdout + first.stderr
    stat_weights = (out / "cdr-gnvpro" / "weights.npz").stat().st_mtime_ns
    record = json.loads((out / "stages.json").read_text())
    second = run_demo(out, "--stop-after", "train")
    assert second.returncode == 0, second.stdout + second.stderr
    return out, first, second, record, stat_weights


def test_dataset_and_training_stages(trained):
    out, first, _, record, _ = trained
    text = first.stdout
    with h5py.File(out / "cdr.h5", "r") as f:
        assert f["y"].shape == (SAMPLES, 55) and f["c"].shape == (SAMPLES, 72)
        assert bool(f.attrs["complete"])
        assert json.loads(f.attrs["config"])["solver"]["n_cells"] == 12
    for name in ("weights.npz", "metadata.json", "summary.json", "history.csv",
                 "convergence.png"):
        assert (out / "cdr-gnvpro" / name).is_file(), name
    assert (out / "logs" / "dataset.log").is_file() and (out / "logs" / "train.log").is_file()
    # fewer samples than the paper: the output says so
    assert f"NOTE: {SAMPLES} samples, fewer than the paper's 800" in text
    summary = json.loads((out / "cdr-gnvpro" / "summary.json").read_text())
    for split in ("train", "validation", "test"):
        row = table_row(text, split)
        e = summary["errors"][split]
        assert_close(row[0], e["mean"])
        assert_close(row[1], e["std"])
        assert int(row[-1]) == e["n"]
    assert sum(summary["errors"][s]["n"] for s in summary["errors"]) == SAMPLES
    for stage, label in (("dataset", "generate-dataset"), ("train", "train-surrogate")):
        assert float(table_row(text, label)[0]) == pytest.approx(record[stage]["wall_s"],
                                                                 abs=0.051)
    total = float(table_row(text, "total")[0])
    assert total == pytest.approx(record["dataset"]["wall_s"] + record["train"]["wall_s"],
                                  abs=0.051)
    assert str(out / "cdr-gnvpro" / "convergence.png") in text


def test_rerun_reuses_finished_stages(trained):
    out, first, second, record, stat_weights = trained
    assert "[dataset] finished in an earlier run" in second.stdout
    assert "[train] finished in an earlier run" in second.stdout
    for stage, label in (("dataset", "generate-dataset"), ("train", "train-surrogate")):
        assert table_row(second.stdout, label)[1:] == "(reused from an earlier run)".split()
        assert float(table_row(second.stdout, label)[0]) == pytest.approx(
            record[stage]["wall_s"], abs=0.051)
    assert json.loads((out / "stages.json").read_text()) == record
    assert (out / "demo_table.txt").read_text() in second.stdout
    assert (out / "cdr-gnvpro" / "weights.npz").stat().st_mtime_ns == stat_weights
    # the same numbers as the first run
    for split in ("train", "validation", "test"):
        assert table_row(second.stdout, split) == table_row(first.stdout, split)


def test_changed_settings_are_refused_not_mixed(trained):
    """A different dataset size into the same folder: generate-dataset refuses, the driver
    says so and leaves the finished stages alone."""
    out, *_ = trained
    before = (out / "stages.json").read_text()
    proc = run_demo(out, "--stop-after", "train", "--samples", str(SAMPLES + 2))
    assert proc.returncode == 1
    assert "stage dataset refused its input (exit status 2" in proc.stderr
    assert "different configuration" in (out / "logs" / "dataset.log").read_text()
    assert (out / "stages.json").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--eval-seed", "0"], "--eval-seed 0: equals the dataset seed"),
    (["--samples", "2"], "--samples 2: at least 4"),
    (["--ranks", "0"], "--ranks 0: must be at least 1"),
    (["--set", "n_cells"], "--set 'n_cells': expected KEY=VALUE"),
])
def test_bad_options(tmp_path, args, message):
    proc = subprocess.run([sys.executable, str(DRIVER), "--out", str(tmp_path / "o"), *args],
                          capture_output=True, text=True, timeout=60, env=clean_env())
    assert proc.returncode == 2
    assert "demo_pipeline: error:" in proc.stderr and message in proc.stderr
    assert not (tmp_path / "o").exists()


def test_full_pipeline_with_evaluation(trained):
    """All three stages; the fresh-solve and cost rows equal report.json (contract 2)."""
    out, *_ = trained
    proc = run_demo(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "[dataset] finished in an earlier run" in text
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert report["problem"] == "cdr" and report["n_fresh"] + report["n_failed"] == EVAL_SAMPLES
    fresh = table_row(text, "fresh PDE solves")
    for i, key in enumerate(("mean", "std", "median", "p95", "max")):
        assert_close(fresh[i], report["fresh"][key])
    assert int(fresh[5]) == report["n_fresh"]
    for split, e in report.get("splits", {}).items():
        row = table_row(text, split)
        assert_close(row[0], e["mean"])
        assert int(row[-1]) == e["n"]
    cost = report["cost"]
    assert_close(table_row(text, "PDE solve (median)")[0], cost["pde_seconds_per_solve"])
    single = table_row(text, "surrogate, single sample")
    assert_close(single[0], cost["surrogate_seconds_single"])
    assert float(single[2].rstrip("x")) == pytest.approx(cost["speedup_single"], rel=6e-3)
    batched = table_row(text, "surrogate, batched, per sample")
    assert_close(batched[0], cost["surrogate_seconds_per_sample_batched"])
    record = json.loads((out / "stages.json").read_text())
    assert float(table_row(text, "evaluate-surrogate")[0]) == pytest.approx(
        record["evaluate"]["wall_s"], abs=0.051)
    assert (out / "evaluation" / "report.md").is_file()
    for rel in report["figures"].values():
        assert (out / "evaluation" / rel).is_file(), rel
        assert str(out / "evaluation" / rel) in text
    # a rerun reuses all three stages
    again = run_demo(out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[evaluate] finished in an earlier run" in again.stdout
    assert table_row(again.stdout, "fresh PDE solves") == fresh


def test_sigterm_stops_the_stage_cleanly(tmp_path):
    """SIGTERM to the driver (a scheduler, `timeout`) is passed on to the running tool:
    generate-dataset saves its finished samples, the driver says how to resume, and the
    unfinished stage is not recorded as done."""
    import signal
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, str(DRIVER), "--out", str(out), "--samples", "200", "--ranks", "2",
           "--set", "n_cells=12", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(), cwd=ROOT)
    # the file appears when the solving starts (its first checkpoint comes 10 s later, so the
    # number of finished samples is not visible before the signal)
    deadline = time.monotonic() + 90
    while not (out / "cdr.h5").exists() and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)
    assert proc.poll() is None, "finished before the signal"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted; run the same command again to resume" in stderr
    assert "interrupted by signal 15" in (out / "logs" / "dataset.log").read_text()
    with h5py.File(out / "cdr.h5", "r") as f:
        assert not bool(f.attrs["complete"])
        assert 1 <= int((f["status"][()] == 1).sum()) < 200
    assert "dataset" not in (json.loads((out / "stages.json").read_text())
                             if (out / "stages.json").exists() else {})
