"""Adaptive against uniform sampling with the same solve budget (refine-surrogate, issue 19).

    python bench/bench_refine.py --out bench-refine [--problem dcr] [--base-samples 1000] \\
        [--max-solves 2000] [--batch 100] [--ensemble 5] [--check-samples 200] [--ranks 2]

Steps (each a real command, each resumable: rerun the same line after an interruption):

1. ``generate-dataset PROBLEM --samples BASE --seed 11`` -> ``OUT/base.h5`` (the starting
   data, SPEC settings unless ``--set``);
2. ``train-surrogate --method gnvpro --ensemble K`` -> ``OUT/ensemble`` (default preset);
3. ``refine-surrogate OUT/ensemble --strategy adaptive`` -> ``OUT/adaptive`` and
   ``--strategy uniform`` -> ``OUT/uniform``, same target, budget, batch, candidates and check
   set (seed);
4. the figure ``OUT/adaptive_vs_uniform.png`` (check-set error against PDE solves in the
   training data) and ``OUT/bench_refine.json``: for each error level reached by uniform
   sampling, the solves adaptive sampling needed to reach it (linear interpolation of log
   error between rounds) and the ratio.

Prints the table. Timings are wall and CPU seconds of each stage (the machine may be loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def command(name: str, ranks: int) -> list[str]:
    """A project command run as ``python -m`` (under mpiexec with more than one rank)."""
    module = {"generate-dataset": "datasets.cli", "train-surrogate": "train.cli",
              "refine-surrogate": "surrogate.refinement.cli"}[name]
    base = [sys.executable, "-m", module]
    if ranks > 1 and name != "train-surrogate":
        return [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks)] + base
    return base


def run(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd`` (stdout+stderr appended to ``log``); wall and CPU seconds (children)."""
    t0, c0 = time.perf_counter(), os.times()
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    c1 = os.times()
    if proc.returncode:
        sys.exit(f"bench_refine: {' '.join(cmd[-6:])} failed with status {proc.returncode}; "
                 f"see {log}")
    return {"wall": time.perf_counter() - t0,
            "cpu": (c1.children_user - c0.children_user) + (c1.children_system
                                                              - c0.children_system)}


def solves_to_reach(rounds: list[dict], level: float) -> float | None:
    """Fewest training solves at which the curve's mean error reaches ``level`` (log-linear
    interpolation between rounds); None if it never does."""
    prev = None
    for r in rounds:
        if r["error"] <= level:
            if prev is None or prev["error"] <= level:
                return float(r["n_solves"])
            t = (np.log(prev["error"]) - np.log(level)) / (np.log(prev["error"])
                                                           - np.log(r["error"]))
            return float(prev["n_solves"] + t * (r["n_solves"] - prev["n_solves"]))
        prev = r
    return None


def compare(adaptive: list[dict], uniform: list[dict]) -> list[dict]:
    """For each round of the uniform run after the first: its error, its solves, the solves
    adaptive sampling needed for the same error and the ratios (total and added solves)."""
    n0 = uniform[0]["n_solves"]
    rows = []
    for r in uniform[1:]:
        n_a = solves_to_reach(adaptive, r["error"])
        rows.append({"error": r["error"], "uniform_solves": r["n_solves"],
                     "adaptive_solves": n_a,
                     "ratio_total": None if n_a is None else r["n_solves"] / n_a,
                     "ratio_added": None if n_a is None or n_a <= n0 else
                     (r["n_solves"] - n0) / (n_a - n0)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench-refine"))
    p.add_argument("--problem", default="dcr", choices=("dcr", "cdr"))
    p.add_argument("--base-samples", type=int, default=1000)
    p.add_argument("--max-solves", type=int, default=2000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--candidates", type=int)
    p.add_argument("--ensemble", type=int, default=5)
    p.add_argument("--check-samples", type=int, default=200)
    p.add_argument("--target", type=float, default=0.005)
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--cold", action="store_true", help="retrain from scratch every round")
    p.add_argument("--config", help="TOML of train-surrogate (default: the default preset)")
    p.add_argument("--set", action="append", default=[], help="solver setting KEY=VALUE")
    args = p.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "bench_refine.log"
    times: dict[str, dict[str, float]] = {}
    sets = [x for kv in args.set for x in ("--set", kv)]
    base = out / "base.h5"
    times["base data"] = run(command("generate-dataset", args.ranks) + [
        args.problem, "--samples", str(args.base_samples), "--seed", "11", "--out", str(base),
        "--no-progress", *sets], log)
    config = ["--config", args.config] if args.config else []
    ens = out / "ensemble"
    times["ensemble"] = run(command("train-surrogate", 1) + [
        "--data", str(base), "--method", "gnvpro", "--ensemble", str(args.ensemble),
        "--threads", "1", "--quiet", "--resume", "--out", str(ens), *config], log)
    curves = {}
    for strategy in ("adaptive", "uniform"):
        extra = (["--candidates", str(args.candidates)] if args.candidates else []) + \
            (["--cold"] if args.cold else [])
        times[strategy] = run(command("refine-surrogate", args.ranks) + [
            str(ens), "--strategy", strategy, "--target", str(args.target),
            "--max-solves", str(args.max_solves), "--batch", str(args.batch),
            "--check-samples", str(args.check_samples), "--no-progress",
            "--out", str(out / strategy), *extra], log)
        curves[strategy] = json.loads((out / strategy / "state.json").read_text())["rounds"]
    from surrogate.refinement.plots import plot_error_vs_solves

    plot_error_vs_solves(curves, out / "adaptive_vs_uniform.png", target=args.target,
                         title=f"{args.problem}: adaptive vs uniform, batch {args.batch}, "
                         f"{args.ensemble} members")
    rows = compare(curves["adaptive"], curves["uniform"])
    result = {"options": {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in vars(args).items()},
              "times": times, "comparison": rows,
              "adaptive": [(r["n_solves"], r["error"]) for r in curves["adaptive"]],
              "uniform": [(r["n_solves"], r["error"]) for r in curves["uniform"]]}
    (out / "bench_refine.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'solves':>7} {'uniform error':>14} {'adaptive error':>15}")
    for a, u in zip(curves["adaptive"], curves["uniform"], strict=False):
        print(f"{u['n_solves']:>7} {u['error']:>14.5g} {a['error']:>15.5g}")
    print(f"\n{'uniform error':>14} {'uniform solves':>15} {'adaptive solves':>16} "
          f"{'ratio':>6} {'ratio (added)':>14}")
    for r in rows:
        na = "-" if r["adaptive_solves"] is None else f"{r['adaptive_solves']:.0f}"
        rt = "-" if r["ratio_total"] is None else f"{r['ratio_total']:.2f}"
        ra = "-" if r["ratio_added"] is None else f"{r['ratio_added']:.2f}"
        print(f"{r['error']:>14.5g} {r['uniform_solves']:>15} {na:>16} {rt:>6} {ra:>14}")
    print("\nstage times (s): " + ", ".join(f"{k} {v['wall']:.0f} wall / {v['cpu']:.0f} cpu"
                                            for k, v in times.items()))
    print(f"figure: {out / 'adaptive_vs_uniform.png'}")


if __name__ == "__main__":
    main()
