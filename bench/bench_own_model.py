"""docs/own-model.md's figures: the KL example (examples/diffusion_kl.py) through the pipeline.

``mpiexec -n RANKS generate-dataset examples/diffusion_kl.py:DiffusionKL`` (default mesh
48 x 48, 12 KL terms, 25 observables), ``train-surrogate --method gnvpro`` (default preset,
and with ``[model] width = 16``), ``mpiexec -n RANKS evaluate-surrogate`` with fresh solves;
prints dataset time per sample, test and fresh-solve errors, wall and CPU seconds of each
step. Not part of the tests (about 6 minutes on 2 loaded cores).

Usage::

    .venv/bin/python bench/bench_own_model.py [--samples 1000] [--fresh 200] [--ranks 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
SPEC = "examples/diffusion_kl.py:DiffusionKL"


def step(cmd: list, cwd: Path) -> tuple[str, float, float]:
    """Run a command; (stdout, wall seconds, CPU seconds of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_"))}
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                          env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"bench: {' '.join(map(str, cmd))} failed:\n{proc.stdout}{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--fresh", type=int, default=200)
    p.add_argument("--ranks", type=int, default=2)
    args = p.parse_args()
    mpi = [BIN / "mpiexec", "-n", str(args.ranks)]
    print(f"KL example, {args.samples} samples, {args.ranks} ranks (loadavg "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out, wall, cpu = step([*mpi, BIN / "generate-dataset", SPEC, "--samples",
                               str(args.samples), "--seed", "1", "--out", work / "kl.h5",
                               "--no-progress"], ROOT)
        print(out.strip())
        import h5py
        import numpy as np

        with h5py.File(work / "kl.h5") as f:
            solve = f["solve_time"][()]
        print(f"dataset: {wall:.1f} s wall, {cpu:.1f} s CPU; {1e3 * wall / args.samples:.1f} ms "
              f"wall per sample on {args.ranks} ranks; solve median {1e3 * np.median(solve):.1f}"
              f" ms (one rank)")
        (work / "w16.toml").write_text("[model]\nwidth = 16\n")
        for label, extra in (("default preset (width 8)", []),
                             ("width 16", ["--config", work / "w16.toml"])):
            model = work / ("model" + str(len(extra)))
            out, wall, cpu = step([BIN / "train-surrogate", "--data", work / "kl.h5",
                                   "--method", "gnvpro", "--out", model, "--quiet",
                                   "--threads", "1", *extra], work)
            summary = json.loads((model / "summary.json").read_text())
            test = summary["errors"]["test"]
            print(f"train {label}: test {test['mean']:.4f} ± {test['std']:.4f}; {wall:.1f} s "
                  f"wall, {cpu:.1f} s CPU")
            out, wall, cpu = step([*mpi, BIN / "evaluate-surrogate", model, "--samples",
                                   str(args.fresh), "--seed", "2", "--out", work / "report",
                                   "--no-progress"], work)
            report = json.loads((work / "report" / "report.json").read_text())
            fresh, cost = report["fresh"], report["cost"]
            print(f"  fresh solves ({args.fresh}): {fresh['mean']:.4f} ± {fresh['std']:.4f} "
                  f"(median {fresh['median']:.4f}, p95 {fresh['p95']:.4f}, max "
                  f"{fresh['max']:.4f}); PDE {1e3 * cost['pde_seconds_per_solve']:.1f} ms, "
                  f"surrogate {1e3 * cost['surrogate_seconds_single']:.2f} ms single, "
                  f"{1e6 * cost['surrogate_seconds_per_sample_batched']:.1f} us/sample "
                  "batched; "
                  f"{wall:.1f} s wall, {cpu:.1f} s CPU")
            import shutil

            shutil.rmtree(work / "report")


if __name__ == "__main__":
    main()
