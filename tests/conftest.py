"""Shared test set-up: tests marked ``mpi`` need exactly 2 ranks.

A plain ``pytest`` run (1 rank) skips them with a message; ``make test`` runs them with
``mpiexec -n 2 python -m pytest -m mpi``.
"""

import pytest

from solvers.common.mpi_network import init_mpi

MPI = init_mpi()  # MPI on loopback (as every entry point), before mpi4py/petsc4py


def pytest_collection_modifyitems(config, items):
    size = MPI.COMM_WORLD.size
    for item in items:
        if "mpi" in item.keywords and size != 2:
            item.add_marker(pytest.mark.skip(
                reason=f"needs 2 MPI ranks (this run has {size}); `make test` runs it under "
                       "mpiexec -n 2"))
        elif "mpi" not in item.keywords and size > 1:
            item.add_marker(pytest.mark.skip(reason="1-rank test skipped in an MPI run"))


@pytest.fixture
def comm_world():
    return MPI.COMM_WORLD
