# varpro-surrogates: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use (Python >= 3.12 is required by dolfinx-solver-real).

VENV    ?= .venv
PY      := $(VENV)/bin/python
MPIEXEC := $(VENV)/bin/mpiexec
STAMP   := $(VENV)/.installed
DEMO    ?= demo-output
# Demo size: examples/demo_pipeline.py's defaults (CDR at SPEC 1 resolution, 400 samples,
# 100 fresh solves, all local cores: about 10 min on 2 cores); `make demo DEMO_SAMPLES=800`
# for the paper size, DEMO_RANKS=N, DEMO_ARGS='--eval-samples 200 --set dt=0.005' for more.
DEMO_SAMPLES ?=
DEMO_RANKS   ?=
DEMO_ARGS    ?=
# Shell scripts checked by shellcheck (the job scripts and CI), the container recipes
SHELL_SCRIPTS := .ci/run $(wildcard slurm/*.sh slurm/*.sbatch containers/*.sh)
# GNvpro table 2 at paper size (make reproduce REPRODUCE_DATA=/path/to/datasets to reuse them)
REPRODUCE      ?= reproduce-output
REPRODUCE_DATA ?= $(REPRODUCE)
REPRODUCE_ARGS ?=
# Wall-clock cap for the 2-rank test run, so a rank stuck in a collective cannot hang CI.
MPI_TEST_TIMEOUT ?= 900

.PHONY: all venv test lint pytest pytest-mpi demo bench reproduce clean distclean
all: test

# Find an interpreter >= 3.12: $(PYTHON) if given, then python3.14/3.13/3.12/python3 on PATH,
# then pyenv-installed versions (newest first). Prints nothing if none is found.
define find_python
for c in $(PYTHON) python3.14 python3.13 python3.12 python3; do \
  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
    command -v $$c; exit 0; fi; \
done; \
if command -v pyenv >/dev/null 2>&1; then \
  root=$$(pyenv root); \
  for v in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.[0-9]+\.[0-9]+$$' | sort -rV); do \
    p=$$root/versions/$$v/bin/python; \
    if [ -x $$p ] && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
      echo $$p; exit 0; fi; \
  done; \
fi
endef

venv: $(STAMP)

$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  py=$$($(find_python)); \
	  if [ -z "$$py" ]; then \
	    echo "error: no Python >= 3.12 found (tried \$$PYTHON, python3.14/3.13/3.12/python3 on PATH, and pyenv)." >&2; \
	    echo "       dolfinx-solver-real needs Python >= 3.12: install one (e.g. 'pyenv install 3.12') or run 'make PYTHON=/path/to/python3.12'." >&2; \
	    exit 1; \
	  fi; \
	  echo "creating $(VENV) with $$py ($$($$py -c 'import sys; print(sys.version.split()[0])'))"; \
	  $$py -m venv $(VENV); \
	fi; \
	$(PY) -m pip install --quiet --upgrade pip; \
	$(PY) -m pip install --quiet -e '.[dev]'; \
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint containers/Dockerfile
	$(VENV)/bin/shellcheck -x $(SHELL_SCRIPTS)
	$(PY) containers/check_definition.py containers/varpro-surrogates.def

# 1-rank run: everything except the tests that need 2 ranks (those skip cleanly there).
pytest: $(STAMP)
	$(PY) -m pytest -m "not mpi"

# 2-rank run of the tests marked `mpi`; rank 1's report goes to a file, rank 0's to the terminal.
pytest-mpi: $(STAMP)
	@timeout $(MPI_TEST_TIMEOUT) $(MPIEXEC) -n 1 $(PY) -m pytest -m mpi -p no:cacheprovider : \
	  -n 1 sh -c '$(PY) -m pytest -m mpi -p no:cacheprovider -q > .pytest-rank1.log 2>&1' \
	  || { status=$$?; echo "--- rank 1 output (.pytest-rank1.log) ---"; cat .pytest-rank1.log; \
	       [ $$status -eq 124 ] && echo "2-rank tests timed out after $(MPI_TEST_TIMEOUT) s"; \
	       exit $$status; }

test: lint pytest pytest-mpi

# The main job: CDR dataset (MPI, resumable) -> GNvpro surrogate -> evaluation against fresh
# PDE solves, one result table at the end; rerunning reuses the finished stages.
demo: $(STAMP)
	$(PY) examples/demo_pipeline.py --out $(DEMO) $(if $(DEMO_SAMPLES),--samples $(DEMO_SAMPLES)) \
	  $(if $(DEMO_RANKS),--ranks $(DEMO_RANKS)) $(DEMO_ARGS)

# GNvpro table 2 and figure 2 at paper size, --preset paper (datasets reused from
# REPRODUCE_DATA or generated there first: CDR 800 ~18 min, DCR 10,000 on 2 ranks).
reproduce: $(STAMP)
	$(PY) bench/reproduce_table2.py --data-dir $(REPRODUCE_DATA) --out $(REPRODUCE) $(REPRODUCE_ARGS)

# Speed and memory figures (not tests; several minutes).
bench: $(STAMP)
	$(PY) bench/bench_cdr.py
	$(MPIEXEC) -n 2 $(PY) bench/bench_cdr.py --throughput --samples 3
	$(PY) bench/bench_dcr.py
	$(MPIEXEC) -n 2 $(PY) bench/bench_dcr.py
	$(PY) bench/bench_datasets.py

clean:
	rm -rf $(DEMO) $(REPRODUCE) .pytest_cache .ruff_cache .pytest-rank1.log
distclean: clean
	rm -rf $(VENV)
