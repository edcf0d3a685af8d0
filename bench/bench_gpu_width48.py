"""GNvpro at width 48 on DCR 10,000: the GPU against the CPU in one call (issue 18).

    python bench/bench_gpu_width48.py --data /work/data/dcr10k.h5
    python bench/bench_gpu_width48.py --data dcr10k-pack.npz --architecture neural_ode \
        --budgets 1000,625,375

Trains ``train-surrogate --method gnvpro`` (default preset, width 48, the preset's network
and work units unless ``--architecture`` / ``--budgets``) on each of ``--devices``
(default ``cuda,cpu``; the same seed, data and split), then prints one row per device
(training wall and CPU seconds, work units, milliseconds per work unit, test mean relative
error) and the CPU / GPU ratio of the training wall time and of the time per work unit.
The result is also written to ``OUT/gpu_width48.json``.

The device machine of a session cannot reach /work/data: pack the dataset first into a
file that travels with the working tree (``--pack``: y, c and the stored split as float64
.npz, compressed; DCR 10,000 is about 60 MB, under the 64 MiB a run may carry), e.g.::

    python bench/bench_gpu_width48.py --pack /work/data/dcr10k.h5 --out dcr10k-pack.npz
    # then, on the device (carry dcr10k-pack.npz; git-ignored files need carry):
    python bench/bench_gpu_width48.py --data dcr10k-pack.npz --threads 16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from datasets.split_data import SPLITS, load_split_data  # noqa: E402
from train.cli import main as train_main  # noqa: E402


def pack(src: str, dst: str) -> None:
    """y, c and the split of ``src`` as a compressed .npz (problem detected from the shapes)."""
    data = load_split_data(src)
    y = np.concatenate([data.y[s] for s in SPLITS])
    c = np.concatenate([data.c[s] for s in SPLITS])
    split = np.concatenate([np.full(data.y[s].shape[0], s) for s in SPLITS])
    np.savez_compressed(dst, y=y, c=c, split=split)
    print(f"{dst}: {y.shape[0]} samples, {Path(dst).stat().st_size / 2**20:.1f} MiB")


def run(device: str, args: argparse.Namespace, out: Path) -> dict:
    """One training on ``device``; its summary."""
    cfg = out / "width48.toml"
    text = f"[model]\nwidth = {args.width}\narchitecture = \"{args.architecture}\"\n"
    if args.budgets != "auto":
        text += f"[gnvpro]\nwork_units_per_level = [{args.budgets}]\n"
    cfg.write_text(text)
    target = out / device.replace(":", "")
    argv = ["--data", args.data, "--method", "gnvpro", "--device", device, "--config", str(cfg),
            "--seed", str(args.seed), "--quiet", "--overwrite", "--out", str(target)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    status = train_main(argv)
    if status != 0:
        raise SystemExit(f"train-surrogate on {device} failed (status {status})")
    return json.loads((target / "summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/data/dcr10k.h5")
    p.add_argument("--pack", metavar="SRC", help="write SRC as a compressed .npz to --out")
    p.add_argument("--out", default="bench-output/gpu-width48")
    p.add_argument("--devices", default="cuda,cpu")
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--architecture", default="auto",
                   help="auto (the default preset's network: a ResNet for DCR) or neural_ode")
    p.add_argument("--budgets", default="auto",
                   help="work units per level, comma-separated (auto: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads of torch")
    args = p.parse_args(argv)
    if args.pack:
        pack(args.pack, args.out)
        return 0
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("no CUDA device here: run with --devices cpu, or on a machine with a GPU")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for device in devices:
        s = run(device, args, out)
        rows[device] = {"wall": s["wall_time"], "cpu": s["cpu_time"], "wu": s["work_units"],
                        "ms_per_wu": 1e3 * s["wall_time"] / s["work_units"],
                        "test": s["errors"]["test"]["mean"]}
        print(f"{device:<8} wall {rows[device]['wall']:8.1f} s  cpu {rows[device]['cpu']:8.1f} s"
              f"  {rows[device]['wu']:7.0f} WU  {rows[device]['ms_per_wu']:7.2f} ms/WU  test "
              f"{rows[device]['test']:.4f}", flush=True)
    gpu = next((d for d in devices if d.startswith("cuda")), None)
    if gpu is not None and "cpu" in rows:
        ratio = rows["cpu"]["wall"] / rows[gpu]["wall"]
        per_wu = rows["cpu"]["ms_per_wu"] / rows[gpu]["ms_per_wu"]
        rows["ratio_cpu_over_gpu"] = {"wall": ratio, "per_work_unit": per_wu}
        print(f"CPU / GPU: training wall time {ratio:.2f}x, per work unit {per_wu:.2f}x "
              f"({torch.cuda.get_device_name(gpu)}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads)")
    (out / "gpu_width48.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
