"""CDR solver benchmark (SPEC 1 defaults): prints the figures quoted in the README.

    python bench/bench_cdr.py [--samples 5]                  # 1 rank
    mpiexec -n 2 python bench/bench_cdr.py --throughput     # 2 ranks, different samples

Figures: first-run JIT compile time (cold cache), set-up time, seconds per sample (median),
Newton iterations and (sub)steps per sample; with --throughput each rank solves its own
samples on COMM_SELF and rank 0 prints the total samples per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from solvers.common.mpi_network import init_mpi

MPI = init_mpi()  # MPI on loopback for one node, before petsc4py / dolfinx


def cold_compile_seconds() -> float:
    """Build a solver with an empty JIT cache; returns the construction time."""
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VARPRO_JIT_CACHE_DIR"] = cache
        from solvers.cdr import CDRSolver

        t0 = time.perf_counter()
        CDRSolver(MPI.COMM_SELF)
        elapsed = time.perf_counter() - t0
        del os.environ["VARPRO_JIT_CACHE_DIR"]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--throughput", action="store_true",
                    help="every rank solves --samples samples on COMM_SELF")
    args = ap.parse_args()
    from solvers.cdr import CDRSolver

    world = MPI.COMM_WORLD
    rank0 = world.rank == 0
    if not args.throughput and rank0:
        print(f"first-run compile (cold JIT cache, incl. set-up): {cold_compile_seconds():.1f} s")
    t0 = time.perf_counter()
    solver = CDRSolver(MPI.COMM_SELF)
    setup = time.perf_counter() - t0
    rng = np.random.default_rng(1234 + world.rank)
    times, cpu, newton, steps = [], [], [], []
    world.Barrier()
    t_all = time.perf_counter()
    for _ in range(args.samples):
        c0 = time.process_time()
        r = solver.run(solver.sample_parameters(rng))
        cpu.append(time.process_time() - c0)
        times.append(r.wall_time)
        newton.append(r.newton_iterations)
        steps.append(r.substeps)
    wall = time.perf_counter() - t_all
    all_walls = world.gather(wall, root=0)
    if not rank0:
        return
    print(f"set-up with warm cache: {setup:.2f} s")
    print(f"seconds per sample (1 rank, median of {args.samples}): "
          f"{statistics.median(times):.2f} (min {min(times):.2f}, max {max(times):.2f}); "
          f"CPU seconds per sample {statistics.median(cpu):.2f}")
    print(f"Newton iterations per sample: median {statistics.median(newton):.0f} "
          f"({statistics.median(newton) / solver.n_steps:.2f} per step); "
          f"steps per sample: {statistics.median(steps):.0f}")
    if args.throughput:
        total = args.samples * world.size
        print(f"throughput on {world.size} ranks (different samples): "
              f"{total / max(all_walls):.3f} samples/s ({max(all_walls) / args.samples:.2f} s "
              f"per sample per rank)")


if __name__ == "__main__":
    main()
