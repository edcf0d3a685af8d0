"""Training-quality study (issue 12): test error and wall time of train-surrogate variants.

    python bench/bench_quality.py --data /work/data/cdr800.h5 --seeds 0,1,2,3,4 \
        --variants paper,default --threads 1 --out bench-output/quality-cdr
    python bench/bench_quality.py --data /work/data/dcr10000.h5 --seeds 0 --variants default

Each variant is a preset plus TOML overrides (see ``VARIANTS``: the levers of issue 12
switched off one at a time, widths, float32 features, budgets). ``--resplit`` replaces the
stored split by a seeded one (seed = the run's seed; SPEC section 3 fractions), so the spread
covers split and initialisation seeds. Model selection is on the validation split; the test
error is only reported. Prints one row per variant: median (min-max) of the test mean relative
error and the median training wall time, and writes ``quality.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.cli import main as train_main  # noqa: E402

#: name -> (preset, TOML overrides)
VARIANTS: dict[str, tuple[str, str]] = {
    "paper": ("paper", ""),
    "default": ("default", ""),
    "default-unstable-start": ("default", "[model]\nmax_step_radius = 0.0\n"),
    "default-no-carry": ("default", "[gnvpro]\ncarry_radius = false\n"),
    "default-no-encoding": ("default", "[model]\nperiodic_inputs = {}\n"),
    "default-float32": ("default", "[model]\ndtype = \"float32\"\n"),
    "default-width16": ("default", "[model]\nwidth = 16\n"),
    "default-width24": ("default", "[model]\nwidth = 24\n"),
    "default-width32": ("default", "[model]\nwidth = 32\n"),
    "default-patience": ("default", "[gnvpro]\npatience = 15\nmin_improvement = 1e-3\n"),
    "paper-stable": ("paper", "[model]\nmax_step_radius = 2.0\n"),
    "paper-encoding": ("paper", "[model]\nperiodic_inputs = {2 = 3.141592653589793}\n"),
    "paper-carry": ("paper", "[gnvpro]\ncarry_radius = true\n"),
}


def resplit_copy(path: str, out: Path) -> str:
    """The dataset as .npz without its stored split (train-surrogate then splits by seed)."""
    from datasets.split_data import load_split_data

    data = load_split_data(path)
    y = np.concatenate([data.y[s] for s in ("train", "validation", "test")])
    c = np.concatenate([data.c[s] for s in ("train", "validation", "test")])
    target = out / (Path(path).stem + "-nosplit.npz")
    np.savez(target, y=y, c=c)
    return str(target)


def run_variant(name: str, data: str, seed: int, out: Path, threads: str | None,
                extra: str) -> dict:
    preset, toml = VARIANTS[name]
    target = out / f"{name}-seed{seed}"
    args = ["--data", data, "--method", "gnvpro", "--preset", preset, "--seed", str(seed),
            "--quiet", "--out", str(target)]
    toml = toml + extra
    if toml:
        cfg = out / f"{name}.toml"
        cfg.write_text(toml)
        args += ["--config", str(cfg)]
    if threads:
        args += ["--threads", threads]
    if (target / "summary.json").is_file():
        (target / "summary.json").unlink()
    rc = train_main(args)
    if rc != 0:
        raise SystemExit(f"train-surrogate failed for {name} seed {seed} (status {rc})")
    return json.loads((target / "summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--variants", default="paper,default",
                   help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--threads", help="CPU threads of torch")
    p.add_argument("--resplit", action="store_true",
                   help="seeded split per seed instead of the stored one")
    p.add_argument("--extra-toml", default="", help="TOML text appended to every variant")
    p.add_argument("--out", default="bench-output/quality")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.variants.split(",")
    for n in names:
        if n not in VARIANTS:
            p.error(f"--variants: unknown variant {n!r} (known: {', '.join(VARIANTS)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    data = resplit_copy(args.data, out) if args.resplit else args.data
    results: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for name in names:
        results[name] = []
        for seed in seeds:
            s = run_variant(name, data, seed, out, args.threads, args.extra_toml)
            e = s["errors"]
            results[name].append({"seed": seed, "test": e["test"]["mean"],
                                  "test_std": e["test"]["std"],
                                  "validation": e["validation"]["mean"],
                                  "train": e["train"]["mean"], "wall_time": s["wall_time"],
                                  "work_units": s["work_units"],
                                  "stop_reasons": s["stop_reasons"]})
            print(f"{name:<24} seed {seed}: test {e['test']['mean']:.4f} ± "
                  f"{e['test']['std']:.4f}  val {e['validation']['mean']:.4f}  "
                  f"{s['wall_time']:.1f} s  {s['work_units']:.0f} WU", flush=True)
    print(f"\n{'variant':<24} {'test mean rel. err: median (min-max)':>38} {'wall [s]':>9}")
    for name, rows in results.items():
        t = [r["test"] for r in rows]
        w = statistics.median(r["wall_time"] for r in rows)
        print(f"{name:<24} {statistics.median(t):>14.4f} ({min(t):.4f}-{max(t):.4f}) "
              f"{'':>5} {w:>9.1f}")
    print(f"total {time.perf_counter() - t0:.0f} s, threads {args.threads or 'default'}, "
          f"resplit {args.resplit}")
    (out / "quality.json").write_text(json.dumps({"data": args.data, "threads": args.threads,
                                                  "resplit": args.resplit,
                                                  "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
