"""Reproduce GNvpro table 2 and figure 2 at paper size (``make reproduce``; issue 13).

    python bench/reproduce_table2.py [--data-dir reproduce-output] [--out reproduce-output]
                                     [--ranks 2] [--threads N] [--problems cdr,dcr]
                                     [--methods gnvpro,gn,lbfgsvpro]

For each problem the paper-size dataset is reused from ``--data-dir`` (``cdr800.h5``: 800 CDR
samples, split 400/200/200; ``dcr10000.h5``: 10,000 DCR samples, split 8000/1000/1000; both
seed 1) or generated there first with ``mpiexec -n RANKS generate-dataset`` (resumable; CDR
800 takes about 18 min on 2 ranks). Then ``train-surrogate --compare --preset paper`` trains
every method of ``train.config.METHODS`` (the four of table 2, plus slimTrain once that
method exists) with the paper's settings (SPEC section 4: 200/400 work units per level, T = 4,
widths 8/16, levels 2/4/8) and the stored split; finished methods are reused on a rerun
(``--resume``). Prints the measured table next to the published one, writes
``OUT/table2.md``, ``OUT/table2.json``, the convergence figure ``OUT/figure2.png`` (loss and
validation loss vs work units, dashed lines at the prolongations, as in paper figure 2) and
states the wall time of each stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.config import METHODS  # noqa: E402

#: GNvpro table 2: (train, validation, test), each (mean, std) of the relative error
PAPER = {
    "cdr": {"gn": ((0.0115, 0.0055), (0.0138, 0.0075), (0.0142, 0.0072)),
            "adam": ((0.0091, 0.0045), (0.0114, 0.0086), (0.0116, 0.0072)),
            "lbfgsvpro": ((0.0171, 0.0102), (0.0219, 0.0127), (0.0260, 0.0187)),
            "gnvpro": ((0.0045, 0.0021), (0.0057, 0.0033), (0.0060, 0.0032))},
    "dcr": {"gn": ((0.3837, 0.8384), (0.3650, 0.6920), (0.3517, 0.6638)),
            "adam": ((0.2994, 0.3652), (0.2839, 0.2776), (0.2904, 0.3256)),
            "lbfgsvpro": ((0.0786, 0.1878), (0.0763, 0.1887), (0.0747, 0.1625)),
            "gnvpro": ((0.0198, 0.0311), (0.0191, 0.0258), (0.0199, 0.0322))},
}
PAPER_NAMES = {"gn": "Full GN", "adam": "Full SGD", "lbfgsvpro": "L-BFGSvpro",
               "gnvpro": "GNvpro"}
#: problem -> (file name, samples, seed)
DATASETS = {"cdr": ("cdr800.h5", 800, 1), "dcr": ("dcr10000.h5", 10_000, 1)}
TITLES = {"cdr": "Convection Diffusion Reaction", "dcr": "DC Resistivity"}


def _tool(name: str) -> str:
    """Console script next to the running interpreter (the venv), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"reproduce_table2: error: {name} not found (activate the venv)")
    return found


def ensure_dataset(problem: str, data_dir: Path, ranks: int) -> tuple[Path, float]:
    """Path of the paper-size dataset, generated (resumably) if missing; seconds spent."""
    name, samples, seed = DATASETS[problem]
    path = data_dir / name
    if path.is_file():                 # reused as it is (never written into)
        return path, 0.0
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [_tool("generate-dataset"), problem, "--samples", str(samples), "--seed", str(seed),
           "--out", str(path)]
    if ranks > 1:
        cmd = [_tool("mpiexec"), "-n", str(ranks), *cmd]
    print(f"[{problem}] generating {samples} samples: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ,
                                         "PYTHONPATH": str(Path(__file__).parents[1])})
    return path, time.perf_counter() - t0


def train(problem: str, data: Path, out: Path, threads: int | None, device: str,
          methods: str | None = None) -> tuple[list[dict], float]:
    """``train-surrogate --compare --preset paper`` (resumed); the summaries and seconds."""
    cmd = [_tool("train-surrogate"), "--compare", "--preset", "paper", "--data", str(data),
           "--out", str(out), "--quiet", "--resume", "--device", device]
    if methods:
        cmd += ["--methods", methods]
    if threads:
        cmd += ["--threads", str(threads)]
    print(f"[{problem}] training: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ,
                                         "PYTHONPATH": str(Path(__file__).parents[1])})
    return json.loads((out / "compare.json").read_text()), time.perf_counter() - t0


def _pm(pair) -> str:
    return "-" if pair is None else f"{pair[0]:.4f} ± {pair[1]:.4f}"


def table_markdown(results: dict[str, list[dict]]) -> str:
    """Measured rows next to the published ones (GNvpro table 2)."""
    from train.summary import LABELS

    lines = ["| problem | method | train | validation | test | paper test | work units | "
             "train wall [s] |", "|---|---|---|---|---|---|---|---|"]
    for problem, summaries in results.items():
        for s in summaries:
            e = s["errors"]
            got = [(e[k]["mean"], e[k]["std"]) if k in e else None
                   for k in ("train", "validation", "test")]
            paper = PAPER[problem].get(s["method"])
            label = LABELS.get(s["method"], s["method"])
            lines.append(f"| {problem.upper()} | {label} | {_pm(got[0])} | {_pm(got[1])} | "
                         f"{_pm(got[2])} | {_pm(paper[2] if paper else None)} | "
                         f"{s['work_units']:.0f} | {s['wall_time']:.1f} |")
    return "\n".join(lines) + "\n"


def table_text(results: dict[str, list[dict]]) -> str:
    """Plain-text table: measured (train/validation/test) and the paper's (same columns)."""
    from train.summary import LABELS

    head = (f"{'':<12} {'train':>17} {'validation':>17} {'test':>17} | paper: "
            f"{'train':>17} {'validation':>17} {'test':>17}")
    out = []
    for problem, summaries in results.items():
        out += [TITLES[problem], head, "-" * len(head)]
        for s in summaries:
            e = s["errors"]
            got = [(e[k]["mean"], e[k]["std"]) if k in e else None
                   for k in ("train", "validation", "test")]
            paper = PAPER[problem].get(s["method"], (None, None, None))
            out.append(f"{LABELS.get(s['method'], s['method']):<12} "
                       + " ".join(f"{_pm(g):>17}" for g in got) + " | paper: "
                       + " ".join(f"{_pm(p):>17}" for p in paper))
        out.append("")
    return "\n".join(out)


def figure2(results: dict[str, list[dict]], out: Path, path: Path) -> None:
    """Paper figure 2 style: training and validation loss vs work units per method, one row
    per problem, dashed vertical lines at the prolongations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.history import History
    from train.summary import LABELS

    problems = list(results)
    fig, axes = plt.subplots(len(problems), 2, figsize=(11, 4 * len(problems)), squeeze=False)
    for row, problem in enumerate(problems):
        for s in results[problem]:
            hist = History.read_csv(out / problem / s["method"] / "history.csv")
            wu = hist.column("work_units")
            label = LABELS.get(s["method"], s["method"])
            (line,) = axes[row, 0].semilogy(wu, hist.column("loss"), label=label)
            axes[row, 1].semilogy(wu, hist.column("val_loss"), color=line.get_color(),
                                  label=label)
            for x in hist.level_starts():
                for ax in axes[row]:
                    ax.axvline(x, color=line.get_color(), linestyle="--", linewidth=0.8,
                               alpha=0.6)
        axes[row, 0].set_title(f"{TITLES[problem]}: training loss")
        axes[row, 1].set_title(f"{TITLES[problem]}: validation loss")
        for ax in axes[row]:
            ax.set_xlabel("work units")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="reproduce-output",
                   help="folder of cdr800.h5 / dcr10000.h5 (reused; generated if missing)")
    p.add_argument("--out", default="reproduce-output", help="output folder")
    p.add_argument("--problems", default="cdr,dcr")
    p.add_argument("--ranks", type=int, default=os.cpu_count() or 1,
                   help="MPI ranks for generate-dataset (default: all cores)")
    p.add_argument("--threads", type=int, help="CPU threads of torch for training")
    p.add_argument("--device", default="cpu", help="training device (cpu, cuda)")
    p.add_argument("--methods", help="comma-separated subset of the methods (default all; "
                   "ADAM at the paper's settings on DCR is 4.8 million batch-2 steps, hours "
                   "on 2 cores)")
    args = p.parse_args(argv)
    problems = args.problems.split(",")
    for prob in problems:
        if prob not in DATASETS:
            p.error(f"--problems: unknown problem {prob!r} (known: cdr, dcr)")
    if args.ranks < 1:
        p.error("--ranks must be at least 1")
    out, data_dir = Path(args.out), Path(args.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    results, stages = {}, []
    for prob in problems:
        data, t_gen = ensure_dataset(prob, data_dir, args.ranks)
        stages.append((f"{prob}: dataset {data}", t_gen))
        results[prob], t_train = train(prob, data, out / prob, args.threads, args.device,
                                       args.methods)
        stages.append((f"{prob}: train {len(results[prob])} methods", t_train))
    total = time.perf_counter() - t_all
    text = table_text(results)
    md = table_markdown(results)
    figure2(results, out, out / "figure2.png")
    print("\nGNvpro table 2 reproduced (--preset paper; methods: "
          + (args.methods or ", ".join(METHODS)) + ")\n")
    print(text)
    for name, sec in stages:
        print(f"  {name}: {sec:.0f} s" + (" (reused)" if sec == 0.0 else ""))
    print(f"wall time {total:.0f} s ({total / 60:.1f} min) on {os.cpu_count()} cores; "
          f"figure {out / 'figure2.png'}, table {out / 'table2.md'}")
    (out / "table2.md").write_text(md + f"\nwall time {total:.0f} s\n")
    (out / "table2.json").write_text(json.dumps(
        {"results": results, "paper": PAPER, "stages": stages, "wall_time": total},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
