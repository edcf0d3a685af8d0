"""Bad problem plugins through ``generate-dataset``: every kind of breakage gives one line that
names the plugin (and the sample and problem where there is one), the documented exit status,
and leaves the dataset file intact and resumable."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets.storage import FAILED, OK, PENDING, read_state
from tests.datasets.cli_helpers import clean_env, command
from tests.plugin_sources import IMPORT_ERROR, write_plugin

N = 6


def run_in(folder: Path, args: list[str], n_ranks: int = 1, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    """``generate-dataset ARGS`` run in ``folder`` (a plugin's relative path resolves there)."""
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                         env.get("PYTHONPATH", "")])
    return subprocess.run(command(args, n_ranks), capture_output=True, text=True, cwd=folder,
                          env=env, timeout=timeout)


def generate(folder: Path, spec: str, *extra: str, n_ranks: int = 1, out: str = "d.h5"
             ) -> subprocess.CompletedProcess[str]:
    """``generate-dataset SPEC --samples 6 --seed 1 --out d.h5 ...`` run in ``folder``."""
    return run_in(folder, [spec, "--samples", str(N), "--seed", "1", "--out", out,
                           "--no-progress", "--checkpoint-interval", "0", *extra], n_ranks)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    write_plugin(tmp_path)
    return tmp_path


@pytest.mark.parametrize("spec, text, parts", [
    ("bad.py:Bump", IMPORT_ERROR,
     ["plugin 'bad.py:Bump': cannot import", "ModuleNotFoundError",
      "no_such_module_for_the_tests"]),
    ("bump.py:NoSolve", None, ["plugin 'bump.py:NoSolve'", "class NoSolve lacks solve()"]),
    ("bump.py:Missing", None, ["plugin 'bump.py:Missing'", "has no class 'Missing'",
                               "Bump, Dice, Explodes, NoSolve, NotJson"]),
    ("bump.py:Explodes", None, ["problem 'bump' (plugin 'bump.py:Explodes')",
                                "constructor raised RuntimeError: licence server unreachable"]),
    ("bump.py:NotJson", None, ["problem 'bump' (plugin 'bump.py:NotJson')",
                               "settings() is not JSON-serialisable: setting 'grid'"]),
    ("bump.py:Dice", None, ["problem 'bump' (plugin 'bump.py:Dice')",
                            "sample_parameters() is not deterministic: seed 1, sample 0"]),
])
def test_unusable_plugins_are_refused_before_any_work(plugin: Path, spec: str,
                                                      text: str | None, parts: list[str],
                                                      monkeypatch, capsys) -> None:
    """In-process (one rank): the refusals all come before any MPI work."""
    from datasets.cli import main

    if text is not None:
        write_plugin(plugin, spec.split(":")[0], text)
    monkeypatch.chdir(plugin)
    assert main([spec, "--samples", str(N), "--seed", "1", "--out", "d.h5",
                 "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("generate-dataset: error: "), captured.err
    for part in parts:
        assert part in lines[0], lines[0]
    assert not (plugin / "d.h5").exists() and not (plugin / "d.h5.lock").exists()


@pytest.mark.parametrize("mode, extra, reason", [
    ("raise", [], "problem 'bump' (plugin 'bump.py:Bump'): solve() raised ZeroDivisionError: "
                  "division by zero"),
    ("nan", [], "problem 'bump' (plugin 'bump.py:Bump'), solve() returned non-finite "
                "observables: c[3] = nan (1 such entries)"),
    ("hang", ["--sample-timeout", "1"],
     "problem 'bump' (plugin 'bump.py:Bump'): solve() timed out after 1 s"),
])
def test_a_failing_sample_is_recorded_and_the_job_goes_on(plugin: Path, mode: str,
                                                          extra: list[str], reason: str) -> None:
    proc = generate(plugin, "bump.py:Bump", "--set", f'mode="{mode}"', *extra)
    assert proc.returncode == 0, proc.stderr
    assert f"bump -> d.h5: {N} samples, {N - 1} ok, 1 failed, 0 pending" in proc.stdout
    lines = error_lines(proc)
    assert lines == [f"generate-dataset: 1 sample failed; first: sample 2: {reason}"]
    state = read_state(plugin / "d.h5")
    assert list(state.status) == [OK, OK, FAILED, OK, OK, OK]
    assert state.failure_reason[2] == reason
    assert list(state.attempts) == [1, 1, 1 if mode == "hang" else 2, 1, 1, 1]
    if mode == "hang":  # interrupted after about a second, and the next samples still solve
        assert 0.9 < state.solve_time[2] < 10
    again = generate(plugin, "bump.py:Bump", "--set", f'mode="{mode}"', *extra)
    assert again.returncode == 0 and "0 solved on 1 rank" in again.stdout, again.stderr


@pytest.mark.parametrize("mode, part", [
    ("shape", "solve() returned shape (11,), expected (12,) (n_observables)"),
    ("dtype", "solve() returned dtype <U1; observables must be real numbers"),
])
def test_a_broken_output_contract_stops_the_job_and_the_file_resumes(plugin: Path, mode: str,
                                                                     part: str) -> None:
    proc = generate(plugin, "bump.py:Bump", "--set", f'mode="{mode}"')
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("generate-dataset: error: sample 2: problem 'bump' (plugin "
                               f"'bump.py:Bump'), {part}"), lines[0]
    assert "saved in" in lines[0] and "run the same command to resume" in lines[0]
    state = read_state(plugin / "d.h5")  # a valid file: samples 0, 1 solved, 2 failed
    assert list(state.status) == [OK, OK, FAILED, PENDING, PENDING, PENDING]
    assert not state.attrs["complete"]
    again = generate(plugin, "bump.py:Bump", "--set", f'mode="{mode}"')
    assert again.returncode == 0, again.stderr
    assert f"{N} samples, {N - 1} ok, 1 failed, 0 pending; 3 solved" in again.stdout
    with h5py.File(plugin / "d.h5") as f:
        assert f.attrs["complete"]


def test_resuming_with_a_changed_plugin_names_what_changed(plugin: Path) -> None:
    first = generate(plugin, "bump.py:Bump", "--set", 'mode="shape"')
    assert first.returncode == 1
    path = plugin / "bump.py"
    path.write_text(path.read_text().replace("scale * height", "scale * 1.0 * height"))
    proc = generate(plugin, "bump.py:Bump", "--set", 'mode="shape"')
    assert proc.returncode == 2
    assert "was started with a different configuration; not resuming into it" in proc.stderr
    assert "plugin: the plugin file's SHA-256 (" in proc.stderr
    state = read_state(plugin / "d.h5")
    assert int(np.count_nonzero(state.status == OK)) == 2  # untouched


def test_the_file_records_the_plugin_and_its_facts(plugin: Path) -> None:
    proc = generate(plugin, "bump.py:Bump", "--samples", "8")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(plugin / "d.h5") as f:
        config = json.loads(f.attrs["config"])
        assert f.attrs["problem"] == "bump"
        assert f["parameter_names"].asstr()[()].tolist() == ["centre", "width", "height"]
    assert config["plugin"]["kind"] == "file"
    assert config["plugin"]["import_path"] == f"{(plugin / 'bump.py').resolve()}:Bump"
    from solvers.common.atomic import sha256_file

    assert config["plugin"]["sha256"] == sha256_file(plugin / "bump.py")
    assert config["facts"] == {"periodic_parameters": {}, "default_split": [0.5, 0.25, 0.25],
                               "training_hints": {"standardize_inputs": True,
                                                  "center_targets": True,
                                                  "periodic_inputs": None}}
    assert config["generation"]["split"] == {"sizes": [0.5, 0.25, 0.25], "fractions": True}
    assert config["generation"]["samples"] == 8


def test_samples_default_and_its_absence(plugin: Path) -> None:
    proc = run_in(plugin, ["bump.py:Bump", "--out", "a.h5", "--no-progress"])
    assert proc.returncode == 0 and "bump -> a.h5: 12 samples, 12 ok" in proc.stdout
    text = (plugin / "bump.py").read_text().replace("    default_samples = 12\n", "")
    write_plugin(plugin, "nodefault.py", text)
    proc = run_in(plugin, ["nodefault.py:Bump", "--out", "n.h5", "--no-progress"])
    assert proc.returncode == 2
    assert ("--samples is required: problem 'bump' (plugin 'nodefault.py:Bump') declares no "
            "default_samples") in proc.stderr
