"""Container recipes and job scripts: real linters, and what the recipes must contain.

- hadolint (Dockerfile), shellcheck (job and CI scripts) and containers/check_definition.py
  (spython + shellcheck, Apptainer definition) pass on the project's files and fail on
  broken copies of them;
- both images install a C compiler with the C library headers (the FEniCSx JIT needs them),
  install the project with the Makefile's own pip command (one dependency list), compile
  the CDR forms at build time into a cache everyone can read; the Docker image runs as a
  non-root user;
- the JIT seed cache the images rely on (solvers.cdr: VARPRO_JIT_MARCH, VARPRO_JIT_SEED_DIR)
  really spares the compilation and gives the same numbers;
- the SLURM generate-dataset job, stopped by its time-limit signal, saves its samples and
  resumes when run again (srun replaced by a shim that calls mpiexec: no Slurm here).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import h5py
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "containers" / "Dockerfile"
DEFINITION = ROOT / "containers" / "varpro-surrogates.def"
CHECK_DEF = ROOT / "containers" / "check_definition.py"
SLURM = sorted((ROOT / "slurm").glob("*.sbatch")) + sorted((ROOT / "slurm").glob("*.sh"))


def linter(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in the venv (pyproject.toml [dev] extras)")
    return str(path)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


# ---------------------------------------------------------------- the linters pass and fail

def test_dockerfile_passes_hadolint():
    proc = run([linter("hadolint"), str(DOCKERFILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("old, new, rule", [
    ("FROM python:3.13-slim-bookworm", "FROM python:latest", "DL3007"),
    ("apt-get install -y --no-install-recommends", "apt-get install", "DL3014"),
    ('CMD ["make"', 'USER root\nCMD ["make"', "DL3002"),
    ("WORKDIR /opt/varpro-surrogates", "RUN cd /opt/varpro-surrogates", "DL3003"),
])
def test_hadolint_fails_on_broken_dockerfile(tmp_path, old, new, rule):
    text = DOCKERFILE.read_text()
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1))
    proc = run([linter("hadolint"), str(broken)])
    assert proc.returncode != 0 and rule in proc.stdout, proc.stdout + proc.stderr


def test_every_shell_script_is_linted_by_make():
    """The Makefile's SHELL_SCRIPTS covers every shell script of the repository."""
    make = (ROOT / "Makefile").read_text()
    m = re.search(r"^SHELL_SCRIPTS\s*:=\s*(.*)$", make, re.M)
    assert m is not None
    patterns = m.group(1).replace("$(wildcard", "").replace(")", "").split()
    covered = {p for pat in patterns for p in ROOT.glob(pat)}
    scripts = {p for p in source_files() if p.suffix in (".sh", ".sbatch") or first_bytes(p)
               .startswith((b"#!/bin/bash", b"#!/usr/bin/env bash", b"#!/bin/sh"))}
    assert scripts, "no shell scripts found"
    assert scripts <= covered, f"not linted: {sorted(map(str, scripts - covered))}"
    assert "$(VENV)/bin/shellcheck" in make and "$(VENV)/bin/hadolint" in make
    assert "containers/check_definition.py" in make


def source_files() -> list[Path]:
    """The repository's files: git's list (tracked and untracked, not ignored), else (an
    image without .git) every file outside the venv, caches and outputs."""
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return [ROOT / line for line in proc.stdout.splitlines() if (ROOT / line).is_file()]
    skip = {".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "demo-output",
            "bench-output"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def first_bytes(path: Path, n: int = 24) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


@pytest.mark.parametrize("script", SLURM + [ROOT / ".ci" / "run"], ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
    proc = run([linter("shellcheck"), "-x", str(script.relative_to(ROOT))], cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("old, new, code", [
    ('for kv in $SETTINGS; do args+=(--set "$kv"); done',
     'for kv in $SETTINGS; do args+=(--set "$kv")', "SC1073"),       # syntax error
    ('mkdir -p "$(dirname "$OUT")"', "mkdir -p $(dirname $OUT)", "SC2046"),  # unquoted
    ('finish "$status"', 'finish "$stauts"', "SC2154"),           # misspelt variable
])
def test_shellcheck_fails_on_broken_job_script(tmp_path, old, new, code):
    text = (ROOT / "slurm" / "generate-dataset.sbatch").read_text()
    assert old in text
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "launch.sh").write_text((ROOT / "slurm" / "launch.sh").read_text())
    broken = tmp_path / "slurm" / "generate-dataset.sbatch"
    broken.write_text(text.replace(old, new, 1))
    proc = run([linter("shellcheck"), "-x", "slurm/generate-dataset.sbatch"], cwd=tmp_path)
    assert proc.returncode != 0 and code in proc.stdout, proc.stdout + proc.stderr


def test_definition_passes_check():
    proc = run([sys.executable, str(CHECK_DEF), str(DEFINITION)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 definition file(s) ok" in proc.stdout


@pytest.mark.parametrize("old, new, message", [
    ("Bootstrap: docker", "Bootstrap: library", "spython cannot parse it"),
    ("From: python:3.13-slim-bookworm", "From: python", "needs an explicit tag"),
    ("%environment", "%enviroment", "unknown section %enviroment"),
    ("    python -m venv /opt/venv", "    if python -m venv /opt/venv; then", "%post: error"),
    ('    export PATH="/opt/venv/bin:$PATH"', "    export PATH=/opt/venv/bin:$PTH",
     "%environment: note: Possible misspelling: PTH may not be assigned"),
])
def test_check_definition_fails_on_broken_definition(tmp_path, old, new, message):
    text = DEFINITION.read_text()
    assert old in text
    broken = tmp_path / "broken.def"
    broken.write_text(text.replace(old, new, 1))
    proc = run([sys.executable, str(CHECK_DEF), str(broken)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr


# ------------------------------------------------------------------- what the recipes hold

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def definition_section(name: str) -> str:
    text = DEFINITION.read_text()
    m = re.search(rf"^%{name}\s*$(.*?)(?=^%|\Z)", text, re.M | re.S)
    assert m is not None, f"no %{name} section"
    return re.sub(r"\\\n", " ", m.group(1))


def apt_packages(shell: str) -> set[str]:
    pkgs: set[str] = set()
    for m in re.finditer(r"apt-get install ([^&;\n]*)", shell):
        pkgs |= {w for w in shlex.split(m.group(1)) if not w.startswith("-")}
    return pkgs


def makefile_pip_installs() -> list[list[str]]:
    """The pip commands of the Makefile's install step (the README's set-up)."""
    make = (ROOT / "Makefile").read_text()
    cmds = re.findall(r"\$\(PY\) -m pip install ([^;\n]*);", make)
    assert len(cmds) == 2, cmds
    return [shlex.split(c) for c in cmds]


def pip_installs(shell: str) -> list[list[str]]:
    return [shlex.split(m.group(1)) for m in re.finditer(r"pip install ([^&;\n]*)", shell)]


def without_local_options(words: list[str]) -> list[str]:
    """pip arguments without --no-cache-dir (image size) and the project path."""
    return [w.replace("/opt/varpro-surrogates", ".") for w in words if w != "--no-cache-dir"]


RECIPE_SHELL = {
    "Dockerfile": lambda: "\n".join(a for i, a in dockerfile_instructions() if i == "RUN"),
    "apptainer": lambda: definition_section("post"),
}


@pytest.mark.parametrize("recipe", sorted(RECIPE_SHELL))
def test_images_install_a_c_compiler(recipe):
    shell = RECIPE_SHELL[recipe]()
    pkgs = apt_packages(shell)
    assert {"gcc", "libc6-dev"} <= pkgs or "build-essential" in pkgs, pkgs
    assert not re.search(r"apt-get (purge|remove|autoremove)", shell)


@pytest.mark.parametrize("recipe", sorted(RECIPE_SHELL))
def test_install_step_is_the_makefiles(recipe):
    """The same pip commands as `make venv`, in the same order, nothing else installed by pip:
    pyproject.toml is the one dependency list."""
    shell = RECIPE_SHELL[recipe]()
    assert [without_local_options(c) for c in pip_installs(shell)] == makefile_pip_installs()
    assert not re.search(r"requirements.*\.txt|conda |mamba ", shell)
    assert "python -m venv /opt/venv" in shell


def test_images_hold_everything_the_package_needs():
    """What pyproject.toml installs is copied into both images (the Apptainer recipe lists
    the paths one by one)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", cfg["project"]["readme"]} | {
        p.rstrip("*") for p in cfg["tool"]["setuptools"]["packages"]["find"]["include"]}
    files = {line.split()[0] for line in definition_section("files").splitlines()
             if line.strip()}
    assert needed <= files, needed - files
    for path in files:
        assert (ROOT / path).exists(), f"%files names {path}, which does not exist"
    assert ("COPY", "--chown=10001:10001 . .") in dockerfile_instructions()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not needed & set(ignored)


def test_docker_runs_as_non_root():
    ins = dockerfile_instructions()
    users = [(k, a) for k, (i, a) in enumerate(ins) if i == "USER"]
    assert users, "no USER instruction"
    last, user = users[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    assert any(i == "RUN" and f"--uid {uid}" in a for i, a in ins[:last])
    # the install, the JIT cache and the command all come after the switch
    assert all(k > last for k, (i, a) in enumerate(ins) if "pip install" in a or i == "CMD")


@pytest.mark.parametrize("recipe", sorted(RECIPE_SHELL))
def test_cdr_forms_compiled_at_build_time_into_a_readable_seed_cache(recipe):
    shell = RECIPE_SHELL[recipe]()
    m = re.search(r"VARPRO_JIT_CACHE_DIR=(\S+)[^\n]*CDRSolver\(", shell)
    assert m is not None, "no build-time CDRSolver construction"
    cache = m.group(1)
    assert re.search(rf"chmod -R a\+rX [^\n]*{re.escape(cache)}", shell)
    env = (dict(re.findall(r"(\w+)=(\S+)", " ".join(
        a for i, a in dockerfile_instructions() if i == "ENV")))
        if recipe == "Dockerfile" else dict(re.findall(r"export (\w+)=(\S+)",
                                                       definition_section("environment"))))
    assert env.get("VARPRO_JIT_SEED_DIR") == cache
    assert "VARPRO_JIT_MARCH" in env


# ------------------------------------------------------------------ the JIT seed cache works

def _jit_files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file()}


def test_jit_seed_cache_spares_compilation(tmp_path, monkeypatch):
    import dolfinx_solver  # noqa: F401
    import numpy as np
    from mpi4py import MPI

    from solvers.cdr import CDRSolver
    from solvers.cdr_jit import jit_options as _jit_options

    seed, user = tmp_path / "seed", tmp_path / "home-cache"
    monkeypatch.setenv("VARPRO_JIT_MARCH", "x86-64-v2")
    monkeypatch.setenv("VARPRO_JIT_CACHE_DIR", str(seed))
    monkeypatch.delenv("VARPRO_JIT_SEED_DIR", raising=False)
    opts = _jit_options()
    assert opts["cffi_extra_compile_args"] == ["-O3", "-march=x86-64-v2"]
    tag = Path(opts["cache_dir"]).name
    y = np.full(55, 1.0 / 55)
    c_seed = CDRSolver(MPI.COMM_SELF, n_cells=6).solve(y)
    built = _jit_files(seed / tag)
    assert any(n.endswith(".so") for n in built), built
    for p in [seed, *seed.rglob("*")]:      # read-only, as in the image
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    monkeypatch.setenv("VARPRO_JIT_CACHE_DIR", str(user))
    monkeypatch.setenv("VARPRO_JIT_SEED_DIR", str(seed))
    c_user = CDRSolver(MPI.COMM_SELF, n_cells=6).solve(y)
    # the seeded cache holds exactly the seed's files: nothing was compiled again
    assert _jit_files(user / tag) == built
    # the copy is the user's to write into (forms not in the seed are compiled there)
    assert all(p.stat().st_mode & stat.S_IWUSR for p in [user / tag, *(user / tag).rglob("*")])
    np.testing.assert_array_equal(c_user, c_seed)
    # the tag names the ISA level, not the CPU: another level gets another folder
    monkeypatch.setenv("VARPRO_JIT_MARCH", "x86-64-v3")
    assert Path(_jit_options()["cache_dir"]).name != tag


# ------------------------------------------------- the SLURM job stops and resumes for real

SRUN_SHIM = """#!/bin/bash
# stands in for Slurm's srun on a machine without Slurm: srun options -> mpiexec -n 2
n=2
while [[ $1 == -* ]]; do [[ $1 == --ntasks=* ]] && n=${1#--ntasks=}; shift; done
exec "%s" -n "$n" "$@"
"""


def test_generate_dataset_job_stops_on_time_limit_signal_and_resumes(tmp_path):
    shim = tmp_path / "bin" / "srun"
    shim.parent.mkdir()
    shim.write_text(SRUN_SHIM % (BIN / "mpiexec"))
    shim.chmod(0o755)
    out = tmp_path / "data" / "cdr.h5"
    env = clean_env(PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
                    VARPRO_ROOT=str(ROOT), VARPRO_VENV=str(BIN.parent), PROBLEM="cdr",
                    SAMPLES="80", SEED="4", OUT=str(out), CHECKPOINT="0.2",
                    SETTINGS="n_cells=12")
    env.pop("VARPRO_IMAGE", None)
    script = str(ROOT / "slurm" / "generate-dataset.sbatch")
    job = subprocess.Popen(["bash", script], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)

    def done() -> int:
        try:
            with h5py.File(out, "r") as f:
                return int((f["status"][()] == 1).sum())
        except (OSError, KeyError):
            return 0

    deadline = time.monotonic() + 90
    while done() < 3 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.poll() is None, "the job finished before the signal: " + job.stdout.read()
    job.send_signal(signal.SIGUSR1)           # what `#SBATCH --signal=B:USR1@120` sends
    log, _ = job.communicate(timeout=60)
    assert job.returncode == 143, log         # generate-dataset's 128 + SIGTERM
    assert "time limit near" in log and "submit the same command again to resume" in log
    first = done()
    assert 3 <= first < 80, log
    with h5py.File(out, "r") as f:
        assert not bool(f.attrs["complete"])
    again = subprocess.run(["bash", script], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "srun --mpi=pmi2" in again.stdout
    with h5py.File(out, "r") as f:
        assert bool(f.attrs["complete"]) and int((f["status"][()] == 1).sum()) == 80
        assert len(f.attrs["runs"]) > 0
