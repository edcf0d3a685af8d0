"""Benchmark of the training methods (GNvpro table 2 rows) and of GNvpro on CPU vs GPU.

    python bench/bench_train.py --data cdr.h5 --out bench-output/train
        trains GNvpro, full GN, ADAM and L-BFGSvpro on one dataset (``train-surrogate
        --compare``) and prints train/validation/test relative errors (mean +- std), work
        units and wall time;
    python bench/bench_train.py --synthetic 8000,3,882 --devices cpu,cuda --method gnvpro
        times one method on each device (e.g. a DCR-sized problem) on generated data.

Without ``--data`` a smooth synthetic dataset of the given size (samples, inputs, outputs)
is generated (``--synthetic``, default 800,55,72: CDR-sized).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.cli import main as train_main  # noqa: E402


def synthetic(path: Path, n: int, n_in: int, n_out: int, seed: int = 0) -> None:
    """Smooth nonlinear map y -> c of the given sizes (random features of random inputs)."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(size=(n, n_in))
    A = rng.normal(size=(n_in, 12)) * 3 / np.sqrt(n_in)
    B = rng.normal(size=(12, n_out))
    c = 10.0 + np.tanh(y @ A) @ B + 0.3 * np.sin(y @ A) ** 2 @ B
    np.savez(path, y=y, c=c)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="dataset file; default: synthetic data (see --synthetic)")
    p.add_argument("--synthetic", default="800,55,72",
                   help="samples,inputs,outputs of the generated data (default 800,55,72)")
    p.add_argument("--out", default="bench-output/train")
    p.add_argument("--config", help="train.toml passed on to train-surrogate")
    p.add_argument("--devices", default="cpu", help="comma-separated devices (cpu,cuda)")
    p.add_argument("--method", help="time only this method (default: compare all four)")
    p.add_argument("--threads", help="CPU threads of torch (passed on to train-surrogate)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        n, n_in, n_out = (int(v) for v in args.synthetic.split(","))
        data = str(out / f"synthetic_{n}x{n_in}x{n_out}.npz")
        synthetic(Path(data), n, n_in, n_out)
    common = ["--data", data, "--quiet"] + (["--config", args.config] if args.config else [])
    common += ["--threads", args.threads] if args.threads else []
    results = {}
    for device in args.devices.split(","):
        target = out / device
        mode = ["--method", args.method] if args.method else ["--compare"]
        print(f"== {device} ==", flush=True)
        rc = train_main([*common, *mode, "--device", device, "--out", str(target)])
        if rc != 0:
            return rc
        summary = (target / "summary.json") if args.method else (target / "compare.json")
        results[device] = json.loads(summary.read_text())
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.method and len(results) > 1:
        for device, s in results.items():
            print(f"{args.method} on {device}: {s['wall_time']:.1f} s for "
                  f"{s['work_units']:.0f} work units")
    return 0


if __name__ == "__main__":
    sys.exit(main())
