"""Dataset-generation throughput at paper resolution, on 1 and 2 MPI ranks.

Runs ``mpiexec -n N generate-dataset {cdr,dcr}`` with the SPEC default (paper) settings for a
few samples each, prints samples per second of the solving phase, and extrapolates the wall
time of the paper-size datasets (CDR 800, DCR 10,000 samples) as set-up time + samples / rate.
Takes several minutes; not part of the tests.

Usage::

    .venv/bin/python bench/bench_datasets.py [--ranks 1,2] [--cdr-samples 4] [--dcr-samples 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
PAPER_SAMPLES = {"cdr": 800, "dcr": 10000}
SUMMARY = re.compile(r"in (?P<wall>[\d.]+) s wall time \(solving (?P<solve>[\d.]+) s, "
                     r"(?P<rate>[\d.e+-]+) samples/s\)")


def run(problem: str, samples: int, ranks: int, out: Path) -> tuple[float, float]:
    """Generate ``samples`` samples on ``ranks`` ranks; returns (set-up seconds, samples/s)."""
    cmd = [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "generate-dataset"), problem,
           "--samples", str(samples), "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = SUMMARY.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    wall, solve = float(match["wall"]), float(match["solve"])
    return wall - solve, float(match["rate"])


def hms(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2", help="rank counts to try (default 1,2)")
    parser.add_argument("--cdr-samples", type=int, default=4)
    parser.add_argument("--dcr-samples", type=int, default=20)
    args = parser.parse_args()
    samples = {"cdr": args.cdr_samples, "dcr": args.dcr_samples}
    print(f"{'problem':8}{'ranks':>6}{'samples':>9}{'set-up s':>10}{'samples/s':>11}"
          f"{'paper size':>12}{'extrapolated':>14}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for problem in ("cdr", "dcr"):
            for ranks in (int(r) for r in args.ranks.split(",")):
                start = time.perf_counter()
                out = Path(tmp) / f"{problem}-{ranks}.h5"
                setup, rate = run(problem, samples[problem], ranks, out)
                total = setup + PAPER_SAMPLES[problem] / rate
                print(f"{problem:8}{ranks:>6}{samples[problem]:>9}{setup:>10.1f}{rate:>11.3g}"
                      f"{PAPER_SAMPLES[problem]:>12}{hms(total):>14}   "
                      f"(bench run {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
