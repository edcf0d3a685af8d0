"""Benchmark of the DC-resistivity solver (SPEC section 2, issue 3).

Prints the seconds per sample (conductivity, assembly, solve and observables; median over
several random samples) on the default 48 x 48 x 24 mesh and on the refined 96 x 96 x 48 mesh,
the CG iterations and the peak memory. Run on one rank, and under ``mpiexec -n 2`` for the
distributed figures::

    .venv/bin/python bench/bench_dcr.py
    .venv/bin/mpiexec -n 2 .venv/bin/python bench/bench_dcr.py
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import numpy as np

from solvers.common.mpi_network import init_mpi

MPI = init_mpi()  # MPI on loopback for one node, before petsc4py / dolfinx

from solvers.dcr import DCRSolver  # noqa: E402


def time_samples(solver: DCRSolver, ys: np.ndarray) -> dict[str, Any]:
    """Per sample: wall and CPU seconds (max over ranks) and CG iterations; last observables.

    CPU time is reported as well because the wall time on a shared machine depends on the load.
    """
    comm = solver.comm
    wall, cpu, iterations = [], [], []
    for y in ys:
        comm.Barrier()
        start, start_cpu = time.perf_counter(), time.process_time()
        c = solver.solve(y)
        wall.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        cpu.append(comm.allreduce(time.process_time() - start_cpu, op=MPI.MAX))
        iterations.append(solver.last_iterations)
    return {"wall": np.array(wall), "cpu": np.array(cpu), "iterations": iterations, "c": c}


def report(label: str, solver: DCRSolver, setup: float, run: dict[str, Any]) -> None:
    if solver.comm.rank != 0:
        return
    wall, cpu, its = run["wall"], run["cpu"], run["iterations"]
    print(f"{label}: {solver.n_nodes} nodes on {solver.comm.size} rank(s), "
          f"CG + {solver.pc_type}, rtol {solver.rtol:g}, set-up {setup:.3f} s")
    print(f"  wall seconds per sample: median {np.median(wall):.4f}, min {wall.min():.4f}, "
          f"max {wall.max():.4f} over {len(wall)} samples")
    print(f"  CPU seconds per sample:  median {np.median(cpu):.4f}, min {cpu.min():.4f}")
    print(f"  CG iterations: median {int(np.median(its))}, range {min(its)}-{max(its)}")


def build(comm: MPI.Comm, n_cells: tuple[int, int, int]) -> tuple[DCRSolver, float]:
    """The solver and its construction time (max over ranks)."""
    comm.Barrier()
    start = time.perf_counter()
    solver = DCRSolver(comm, n_cells=n_cells)
    return solver, comm.allreduce(time.perf_counter() - start, op=MPI.MAX)


def print_peak_memory(comm: MPI.Comm, when: str) -> None:
    """Peak resident set size of every rank so far (ru_maxrss is in KiB on Linux)."""
    peaks = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, root=0)
    if comm.rank == 0:
        print(f"  peak resident memory per rank {when}: "
              f"{', '.join(f'{p:.0f}' for p in peaks)} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=11, help="samples on 48 x 48 x 24")
    parser.add_argument("--fine-samples", type=int, default=5, help="samples on 96 x 96 x 48")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD

    solver, setup = build(comm, (48, 48, 24))
    rng = np.random.default_rng(args.seed)
    ys = np.array([solver.sample_parameters(rng) for _ in range(args.samples)])
    run = time_samples(solver, ys)
    report("48 x 48 x 24", solver, setup, run)
    if comm.size > 1:
        c_one = DCRSolver(MPI.COMM_SELF, n_cells=(48, 48, 24)).solve(ys[-1])
        diff = np.linalg.norm(run["c"] - c_one) / np.linalg.norm(c_one)
        if comm.rank == 0:
            print(f"  relative difference to the 1-rank observables: {diff:.2e}")
    print_peak_memory(comm, "after the 48 x 48 x 24 runs")

    fine, setup = build(comm, (96, 96, 48))
    report("96 x 96 x 48", fine, setup, time_samples(fine, ys[:args.fine_samples]))
    print_peak_memory(comm, "after the 96 x 96 x 48 runs")


if __name__ == "__main__":
    main()
