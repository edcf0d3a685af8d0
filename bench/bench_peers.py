"""Our surrogates against standard peers on one dataset, at their training cost (issue 18).

    python bench/bench_peers.py --data /work/data/dcr10k.h5 --out bench-output/peers-dcr \
        --time-budget 600 --threads 2
    python bench/make_foreign_data.py --out bench-output/oscillator.npz
    python bench/bench_peers.py --data bench-output/oscillator.npz --out bench-output/peers-osc

Trains, on the same split (the file's stored split, else train-surrogate's seeded one):

- ``GNvpro (default)``: ``train-surrogate --method gnvpro`` with the default preset;
- ``GNvpro (--time-budget T)``: the same with ``--time-budget`` (``--time-budget 0`` skips);
- ``slimTrain``: ``train-surrogate --method slimtrain`` (default settings; ``--no-slimtrain``
  skips it);
- ``MLP``: scikit-learn's ``MLPRegressor`` (tanh, Adam, early stopping on 10 % of the training
  split), inputs and outputs standardised, the hidden layers chosen on the validation split
  among ``--mlp-layers`` (the training time is that of all candidates);
- ``PCA-GP``: scikit-learn's ``GaussianProcessRegressor`` (Matern 5/2 with one length scale
  per input, a constant and a white-noise term, hyperparameters by maximum likelihood) on the
  leading ``--gp-components`` principal components of the standardised outputs, trained on at
  most ``--gp-max-train`` training samples (O(n^3)).

The peers see the inputs exactly as our surrogate does (the problem's periodic encoding, e.g.
the DCR angle as (cos 2y, sin 2y), then standardised). For each method it prints and writes
(``peers.md``, ``peers.json``) the test mean per-sample relative error (SPEC section 4, with
the training mean as shift for centred problems, i.e. DCR), the scale-free relative Frobenius
error of the standardised outputs and the median R^2 (:mod:`surrogate.metrics`), the
training wall and CPU seconds and the prediction seconds per sample (batched over the test
split), and plots accuracy against training time (``peers.png``). scikit-learn is a
development dependency (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from datasets.split_data import SplitData, load_split_data  # noqa: E402
from solvers.facts import periodic_from_record  # noqa: E402
from surrogate import load  # noqa: E402
from surrogate.encoding import periodic_encoding  # noqa: E402
from surrogate.metrics import (  # noqa: E402
    output_statistics,
    relative_errors,
    scale_free_errors,
)
from train.cli import main as train_main  # noqa: E402


def metrics(pred: np.ndarray, data: SplitData, shift: np.ndarray | None) -> dict[str, Any]:
    """Test-split figures of predictions ``pred`` (n_test, m), physical units."""
    sf = scale_free_errors(pred, data.c["test"], *output_statistics(data.c["train"]))
    return {"test_rel_err": float(relative_errors(pred, data.c["test"], shift).mean()),
            "test_scale_free": sf["relative_frobenius"], "test_r2_median": sf["r2_median"],
            "test_r2_min": sf["r2_min"]}


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall and CPU seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def prediction_seconds(predict: Callable[[np.ndarray], np.ndarray], y: np.ndarray) -> float:
    """Median seconds per sample of a batched prediction over ``y`` (n, d), 5 repeats."""
    predict(y[:2])
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        predict(y)
        times.append((time.perf_counter() - t0) / len(y))
    return float(np.median(times))


# ------------------------------------------------------------------------------ ours
def ours(name: str, args: argparse.Namespace, extra: list[str], data: SplitData,
         shift: np.ndarray | None) -> dict[str, Any]:
    """Train with train-surrogate (``extra`` options) and evaluate the saved surrogate."""
    out = Path(args.out) / name.replace(" ", "_").replace("(", "").replace(")", "").replace(
        "-", "")
    argv = ["--data", args.data, "--seed", str(args.seed), "--quiet", "--overwrite",
            "--out", str(out), "--threads", str(args.threads), *extra]
    _, wall, cpu = timed(lambda: train_main(argv))
    summary = json.loads((out / "summary.json").read_text())
    model = load(out, strict=False)
    y = data.y["test"]
    pred = model.predict(y)
    row = {"method": name, "train_wall": summary["wall_time"], "train_cpu": summary["cpu_time"],
           "command_wall": wall, "predict_seconds": prediction_seconds(model.predict, y),
           **metrics(pred, data, shift)}
    if "time_budget" in summary:
        row["note"] = f"width {summary['time_budget']['width']}"
    else:
        row["note"] = f"width {model.torch_model.features.width}"
    return row


# ------------------------------------------------------------------------------ peers
class Features:
    """Inputs as our surrogate sees them: the problem's periodic encoding, then standardised
    with the training statistics."""

    def __init__(self, data: SplitData) -> None:
        periodic = {str(k): p for k, p in periodic_from_record(data.facts).items()}
        self.encoding = periodic_encoding(data.n_in, periodic)
        raw = self.encode(data.y["train"], standardise=False)
        self.mean, self.std = raw.mean(axis=0), raw.std(axis=0)
        self.std[self.std == 0] = 1.0

    def encode(self, y: np.ndarray, standardise: bool = True) -> np.ndarray:
        x = y if self.encoding is None else self.encoding(
            torch.as_tensor(y, dtype=torch.float64)).numpy()
        return (x - self.mean) / self.std if standardise else x


def mlp(args: argparse.Namespace, data: SplitData, shift: np.ndarray | None
        ) -> dict[str, Any]:
    """MLPRegressor on standardised inputs and outputs, layers chosen on validation."""
    from sklearn.neural_network import MLPRegressor

    feats = Features(data)
    mu, sd = data.c["train"].mean(axis=0), data.c["train"].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    x_tr, x_va = feats.encode(data.y["train"]), feats.encode(data.y["validation"])
    best, best_err, wall, cpu = None, np.inf, 0.0, 0.0
    for layers in args.mlp_layers:
        net = MLPRegressor(hidden_layer_sizes=layers, activation="tanh", solver="adam",
                           early_stopping=True, n_iter_no_change=20, max_iter=args.mlp_epochs,
                           tol=1e-8,   # sklearn's 1e-4 stops at R^2 ~ 0.999: far too early
                           random_state=args.seed)
        _, w, c = timed(lambda net=net: net.fit(x_tr, (data.c["train"] - mu) / sd))
        wall, cpu = wall + w, cpu + c
        val = net.predict(x_va) * sd + mu
        err = scale_free_errors(val, data.c["validation"], *output_statistics(
            data.c["train"]))["relative_frobenius"]
        print(f"  MLP {layers}: validation scale-free error {err:.4g} ({w:.1f} s)", flush=True)
        if err < best_err:
            best, best_err, best_layers = net, err, layers

    def predict(y: np.ndarray) -> np.ndarray:
        return best.predict(feats.encode(y)) * sd + mu

    return {"method": "MLP", "train_wall": wall, "train_cpu": cpu,
            "predict_seconds": prediction_seconds(predict, data.y["test"]),
            "note": f"layers {','.join(map(str, best_layers))}",
            **metrics(predict(data.y["test"]), data, shift)}


def pca_gp(args: argparse.Namespace, data: SplitData, shift: np.ndarray | None
           ) -> dict[str, Any]:
    """GaussianProcessRegressor (ARD Matern 5/2) on the leading principal components of the
    standardised outputs."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    feats = Features(data)
    rng = np.random.default_rng(args.seed)
    n = data.y["train"].shape[0]
    idx = np.sort(rng.choice(n, size=min(n, args.gp_max_train), replace=False))
    x = feats.encode(data.y["train"][idx])
    mu, sd = data.c["train"].mean(axis=0), data.c["train"].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (data.c["train"][idx] - mu) / sd
    k = min(args.gp_components, z.shape[1], z.shape[0])
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    basis = vt[:k].T                                        # (m, k)
    # length scales start at sqrt(d) (standardised inputs: the typical distance between
    # points); starting at 1 in 55 dimensions (CDR) every point looks independent and the
    # optimiser settles on the white-noise explanation (R^2 = 0). One restart from a random
    # start as a second chance.
    kernel = ConstantKernel(1.0) * Matern(length_scale=np.full(x.shape[1], np.sqrt(x.shape[1])),
                                          nu=2.5, length_scale_bounds=(1e-2, 1e3)) \
        + WhiteKernel(1e-5, noise_level_bounds=(1e-10, 1e-1))
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=args.seed,
                                  n_restarts_optimizer=1)
    _, wall, cpu = timed(lambda: gp.fit(x, z @ basis))

    def predict(y: np.ndarray) -> np.ndarray:
        return (gp.predict(feats.encode(y)) @ basis.T) * sd + mu

    return {"method": "PCA-GP", "train_wall": wall, "train_cpu": cpu,
            "predict_seconds": prediction_seconds(predict, data.y["test"]),
            "note": f"{k} components, {len(idx)} train",
            **metrics(predict(data.y["test"]), data, shift)}


# ------------------------------------------------------------------------------ output
def markdown(rows: list[dict[str, Any]], data: SplitData, args: argparse.Namespace) -> str:
    n = data.provenance["n_samples"]
    lines = [f"`{args.data}` ({data.problem}, {data.n_in} -> {data.n_out}, split "
             f"{n['train']}/{n['validation']}/{n['test']} ({data.provenance['split']}), "
             f"{args.threads} thread(s), seed {args.seed})", "",
             "| method | test rel. error | test scale-free | test R^2 median | train wall [s] "
             "| train CPU [s] | predict [s/sample] | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {_f(r['test_rel_err'])} | {_f(r['test_scale_free'])} "
                     f"| {_f(r['test_r2_median'])} | {r['train_wall']:.1f} | "
                     f"{r['train_cpu']:.1f} | {r['predict_seconds']:.2g} | {r['note']} |")
    return "\n".join(lines) + "\n"


def _f(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.4f}"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Test errors (per-sample relative, scale-free) against training wall time, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "test_rel_err", "test mean relative error"),
                           (axes[1], "test_scale_free", "test scale-free error")):
        for r in rows:
            if r[key] is None or r["train_wall"] <= 0:
                continue
            ax.loglog(r["train_wall"], r[key], "o", markersize=8)
            ax.annotate(r["method"], (r["train_wall"], r[key]), textcoords="offset points",
                        xytext=(6, 4), fontsize=9)
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if hi > 10 * lo:                    # over a decade: label decades only (overlaps)
                axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training wall time [s]")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="bench-output/peers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-budget", type=float, default=600.0,
                   help="seconds for the GNvpro --time-budget row (0: skip it)")
    p.add_argument("--no-slimtrain", action="store_true")
    p.add_argument("--slimtrain-epochs", type=int,
                   help="epochs of slimTrain (default: train-surrogate's, 600 on DCR: hours)")
    p.add_argument("--mlp-layers", default="64,64;128,128,128",
                   help="candidate hidden layers, ';'-separated (chosen on validation)")
    p.add_argument("--mlp-epochs", type=int, default=500)
    p.add_argument("--gp-components", type=int, default=20)
    p.add_argument("--gp-max-train", type=int, default=2000)
    p.add_argument("--methods", default="default,budget,slimtrain,mlp,gp",
                   help="subset of default,budget,slimtrain,mlp,gp")
    args = p.parse_args(argv)
    args.mlp_layers = [tuple(int(v) for v in s.split(",")) for s in args.mlp_layers.split(";")]
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_split_data(args.data, seed=args.seed)
    centred = (data.facts.get("training_hints") or {}).get("center_targets")  # e.g. DCR
    shift = data.c["train"].mean(axis=0) if centred else None
    chosen = set(args.methods.split(","))
    jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if "default" in chosen:
        jobs.append(("GNvpro (default)", lambda: ours(
            "GNvpro (default)", args, ["--method", "gnvpro"], data, shift)))
    if "budget" in chosen and args.time_budget > 0:
        name = f"GNvpro (--time-budget {args.time_budget:g})"
        jobs.append((name, lambda: ours(name, args, ["--method", "gnvpro", "--time-budget",
                                                    str(args.time_budget)], data, shift)))
    if "slimtrain" in chosen and not args.no_slimtrain:
        extra = ["--method", "slimtrain"]
        if args.slimtrain_epochs:
            toml = out / "slimtrain.toml"
            toml.write_text(f"[slimtrain]\nepochs = {args.slimtrain_epochs}\n")
            extra += ["--config", str(toml)]
        jobs.append(("slimTrain", lambda: ours("slimTrain", args, extra, data, shift)))
    if "mlp" in chosen:
        jobs.append(("MLP", lambda: mlp(args, data, shift)))
    if "gp" in chosen:
        jobs.append(("PCA-GP", lambda: pca_gp(args, data, shift)))
    rows = []
    from sklearn.exceptions import ConvergenceWarning

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    with threadpool_limits(limits=args.threads):
        for name, job in jobs:
            print(f"{name} ...", flush=True)
            rows.append(job())
            r = rows[-1]
            print(f"  test rel. error {_f(r['test_rel_err'])}, scale-free "
                  f"{_f(r['test_scale_free'])}, train {r['train_wall']:.1f} s wall "
                  f"({r['train_cpu']:.1f} s CPU)", flush=True)
            (out / "peers.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = markdown(rows, data, args)
    print(text, end="")
    (out / "peers.md").write_text(text)
    plot(rows, out / "peers.png", f"{Path(args.data).name}: accuracy vs training time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
