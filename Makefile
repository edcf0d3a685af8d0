# varpro-surrogates: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use (Python >= 3.12 is required by dolfinx-solver-real).

VENV    ?= .venv
PY      := $(VENV)/bin/python
MPIEXEC := $(VENV)/bin/mpiexec
STAMP   := $(VENV)/.installed
DEMO    ?= demo-output
# GNvpro table 2 at paper size (make reproduce REPRODUCE_DATA=/path/to/datasets to reuse them)
REPRODUCE      ?= reproduce-output
REPRODUCE_DATA ?= $(REPRODUCE)
# Demo size: SPEC 1 solver defaults, a smaller dataset than the paper's 800 samples
# (`make demo DEMO_SAMPLES=800` for the paper size, about 25 min on 2 cores).
DEMO_SAMPLES ?= 200
DEMO_RANKS   ?= 2
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

# The main job: CDR dataset (MPI, resumable) -> GNvpro surrogate -> one fresh solve with figure.
demo: $(STAMP)
	$(MPIEXEC) -n $(DEMO_RANKS) $(VENV)/bin/generate-dataset cdr --samples $(DEMO_SAMPLES) \
	  --seed 0 --out $(DEMO)/cdr.h5
	$(VENV)/bin/train-surrogate --data $(DEMO)/cdr.h5 --method gnvpro --out $(DEMO)/cdr-gnvpro
	$(VENV)/bin/solve-pde cdr --seed 123456 --out $(DEMO)/cdr_observables.npy \
	  --plot $(DEMO)/cdr_field.png
	@echo "demo outputs in $(DEMO)/: cdr.h5 (dataset), cdr-gnvpro/ (surrogate, history.csv,"
	@echo "  convergence.png, summary), cdr_field.png (a fresh CDR solve)"

# GNvpro table 2 and figure 2 at paper size, --preset paper (datasets reused from
# REPRODUCE_DATA or generated there first: CDR 800 ~18 min, DCR 10,000 on 2 ranks).
reproduce: $(STAMP)
	$(PY) bench/reproduce_table2.py --data-dir $(REPRODUCE_DATA) --out $(REPRODUCE)

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
