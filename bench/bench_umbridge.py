"""The UM-Bridge source against direct solves: DCR samples per second on 2 ranks.

For each mesh, ``mpiexec -n RANKS generate-dataset dcr`` (direct) and ``mpiexec -n RANKS
generate-dataset umbridge`` against a DCR model served by umbridge's own server
(``umbridge.serve_models``, one process on 127.0.0.1, the way most Python models are served;
its RANKS worker threads share one solver object, so solves are serialised by a lock, as in
``serve-surrogate --pde``: PETSc objects are not thread-safe) with the same settings and seed;
prints samples/s of the solving phase (and of direct solves on 1 rank, for scale), CPU
seconds (clients: the mpiexec job; server: its process) and checks that both datasets hold
bitwise the same parameters and observables. Not part of the tests.

Usage::

    .venv/bin/python bench/bench_umbridge.py [--ranks 2] [--coarse-samples 400]
                                             [--default-samples 100]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
SUMMARY = re.compile(r"in (?P<wall>[\d.]+) s wall time \(solving (?P<solve>[\d.]+) s, "
                     r"(?P<rate>[\d.e+-]+) samples/s\)")
MESHES = {"coarse 12x12x6": [12, 12, 6], "default 48x48x24": [48, 48, 24]}


def serve(port: int, n_cells: list[int], workers: int) -> None:
    """Serve the DCR solver on ``n_cells`` as UM-Bridge model "dcr" (the server process)."""
    import functools
    import threading

    import aiohttp.web
    import umbridge

    from solvers import make_solver

    class DCR(umbridge.Model):
        def __init__(self) -> None:
            super().__init__("dcr")
            self.solver = make_solver("dcr", n_cells=n_cells)
            self.lock = threading.Lock()

        def get_input_sizes(self, config):
            return [3]

        def get_output_sizes(self, config):
            return [self.solver.n_observables]

        def __call__(self, parameters, config):
            with self.lock:
                return [self.solver.solve(parameters[0]).tolist()]

        def supports_evaluate(self):
            return True

    aiohttp.web.run_app = functools.partial(aiohttp.web.run_app, host="127.0.0.1", print=None)
    umbridge.serve_models([DCR()], port=port, max_workers=workers)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_"))}


def generate(args: list[str], ranks: int) -> tuple[float, float, float]:
    """Run generate-dataset; (solving seconds, samples/s, CPU seconds of the job)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "generate-dataset"), *args,
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = SUMMARY.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(match["solve"]), float(match["rate"]), cpu


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare(a: Path, b: Path) -> bool:
    import h5py

    with h5py.File(a) as fa, h5py.File(b) as fb:
        return all(np.array_equal(fa[k][()], fb[k][()]) for k in ("y", "c", "status"))


def bench(label: str, n_cells: list[int], samples: int, ranks: int, work: Path) -> dict:
    from solvers import make_solver

    box = make_solver("dcr", n_cells=n_cells).parameter_bounds
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--n-cells",
                               json.dumps(n_cells), "--ranks", str(ranks)], env=clean_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import requests

        for _ in range(600):
            try:
                requests.get(f"http://127.0.0.1:{port}/Info", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        common = ["--samples", str(samples), "--seed", "1"]
        direct = generate(["dcr", "--set", f"n_cells={n_cells}", *common, "--out",
                           str(work / "direct.h5")], ranks)
        single = generate(["dcr", "--set", f"n_cells={n_cells}", *common, "--out",
                           str(work / "single.h5")], 1)
        cpu0 = process_cpu(server.pid)
        remote = generate(["umbridge", "--set", f'url="http://127.0.0.1:{port}"', "--set",
                           'model="dcr"', "--set", f"lower={box[:, 0].tolist()}", "--set",
                           f"upper={box[:, 1].tolist()}", *common, "--out",
                           str(work / "remote.h5")], ranks)
        server_cpu = process_cpu(server.pid) - cpu0
    finally:
        server.terminate()
        server.wait(timeout=30)
    same = compare(work / "direct.h5", work / "remote.h5")
    for name in ("direct.h5", "single.h5", "remote.h5"):
        (work / name).unlink()
    return {"mesh": label, "samples": samples, "direct": direct, "single": single,
            "remote": remote,
            "server_cpu": server_cpu, "bitwise": same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--coarse-samples", type=int, default=400)
    p.add_argument("--default-samples", type=int, default=100)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n-cells", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        serve(args.serve, json.loads(args.n_cells), args.ranks)
        return
    print(f"DCR through UM-Bridge vs direct, {args.ranks} ranks (loadavg "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'mesh':<18}{'samples':>8}{'1 rank/s':>9}{'direct/s':>10}{'umbridge/s':>12}"
          f"{'ratio':>7}{'cpu direct':>12}{'cpu client':>12}{'cpu server':>12}  bitwise")
    with tempfile.TemporaryDirectory() as tmp:
        for (label, n_cells), samples in zip(MESHES.items(),
                                             (args.coarse_samples, args.default_samples),
                                             strict=True):
            r = bench(label, n_cells, samples, args.ranks, Path(tmp))
            d, u = r["direct"], r["remote"]
            print(f"{label:<18}{samples:>8}{r['single'][1]:>9.3g}{d[1]:>10.3g}{u[1]:>12.3g}"
                  f"{u[1] / d[1]:>7.2f}"
                  f"{d[2]:>11.1f}s{u[2]:>11.1f}s{r['server_cpu']:>11.1f}s  {r['bitwise']}",
                  flush=True)


if __name__ == "__main__":
    main()
