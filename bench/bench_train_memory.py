"""Memory estimate of ``train-surrogate`` (train/resources.py) against the measured peak.

Each case runs GNvpro (30 work units per level, levels 2-4-8) in a fresh interpreter on a
synthetic 55 -> 72 data set and prints the estimate next to the growth of the peak resident
set size during the run (imports included, so small cases over-report by ~150 MiB)::

    .venv/bin/python bench/bench_train_memory.py [--cases 64x800,256x800,128x4000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(1)
w, n, tmp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
y = rng.uniform(size=(n, 55))
np.savez(f"{tmp}/d.npz", y=y, c=np.sin(y @ rng.normal(size=(55, 72))))
open(f"{tmp}/c.toml", "w").write(f"[model]\\nwidth = {w}\\n[gnvpro]\\nwork_units_per_level = 30\\n")
import train.cli as cli
from train.config import merge_config, resolve_config
from train.resources import estimate_training_bytes
cfg = resolve_config(merge_config({"model": {"width": w},
                                   "gnvpro": {"work_units_per_level": 30}}), "unknown", 0)
est = estimate_training_bytes(cfg, "gnvpro", n // 2, 55, 72)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rc = cli.main(["--data", f"{tmp}/d.npz", "--method", "gnvpro", "--config", f"{tmp}/c.toml",
               "--quiet", "--out", f"{tmp}/out"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"width": w, "n_train": n // 2, "rc": rc,
                  "estimate_MiB": round(est["total"] / 2**20, 1),
                  "rss_growth_MiB": round((peak - base) / 1024, 1)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="64x800,256x800,128x4000",
                   help="comma-separated WIDTHxSAMPLES (half of the samples train)")
    args = p.parse_args()
    print(f"{'width':>6} {'n_train':>8} {'estimate MiB':>13} {'peak RSS growth MiB':>20}")
    for case in args.cases.split(","):
        w, n = case.split("x")
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", CHILD, w, n, tmp], cwd=ROOT,
                                 capture_output=True, text=True, check=True,
                                 env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['width']:>6} {r['n_train']:>8} {r['estimate_MiB']:>13.1f} "
              f"{r['rss_growth_MiB']:>20.1f}")


if __name__ == "__main__":
    main()
