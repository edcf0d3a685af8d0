"""slimTrain table 1 and figures 5-6 on a CDR dataset, and the default slimTrain surrogate.

    python bench/bench_slimtrain.py --data /work/data/cdr800.h5 --out bench-output/slimtrain \
        --threads 1

1. For batch sizes 5 and 10 and learning rates 1e-3, 1e-2, 1e-1 (slimTrain section 4.2) it
   trains the slimTrain network (ResNet width 16, depth 8, T = 4) for 20 epochs with slimTrain
   (sGCV, memory depths r = 0, 5, 10) and with ADAM on (theta, W) at the same batch size and
   learning rate, ADAM's W either from the VarPro solve (this project's ADAM baseline) or
   zero, and prints table 1: training and validation loss after 20 epochs (r = 0). Losses are
   the objective 1/(2n) ||W Z - C||_F^2 in the normalised units of the surrogate
   (c / c_scale, c_scale = RMS of the training targets); multiplied by c_scale^2 they are in
   physical units (the ``phys`` columns of table1.json).
2. Writes ``figure5.png`` (training loss vs epoch, rows: batch size, columns: learning rate)
   and ``figure6.png`` (log10 Lambda_k per batch and epoch for the first batch size, rows:
   memory depth, columns: learning rate).
3. Trains the default slimTrain surrogate with ``train-surrogate --method slimtrain`` (all
   defaults) and reports its test mean relative error and seconds per epoch.

Everything is written into ``--out`` (table1.txt, table1.json, default/, bench.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.split_data import load_split_data  # noqa: E402
from surrogate.device import resolve_device  # noqa: E402
from train.adam import Adam  # noqa: E402
from train.cli import main as train_main  # noqa: E402
from train.config import merge_config, resolve_config, slimtrain_model_config  # noqa: E402
from train.factories import build_model, warm_up  # noqa: E402
from train.multilevel import Monitor  # noqa: E402
from train.slimtrain import SlimTrain, lambda_image  # noqa: E402


def run_one(kind: str, cfg: dict, data, *, batch: int, lr: float, memory: int, epochs: int,
            seed: int, device: torch.device) -> dict:
    """Train one configuration; returns per-epoch losses, timing and the Lambdas."""
    depth = cfg["slimtrain"]["depth"]
    model = build_model(cfg, data, [depth], seed, device)
    norm, dt = model.normalizer, model.W.dtype

    def tensors(split):
        y = norm.transform_y(torch.as_tensor(data.y[split], device=device)).to(dt)
        return y, norm.transform_c(torch.as_tensor(data.c[split], device=device))

    Y, C = tensors("train")
    val = tensors("validation")
    warm_up(model, Y)                           # one-time set-up costs are not per-epoch costs
    torch.linalg.svd(torch.ones(3, 2, dtype=torch.float64, device=device))
    dummy = torch.zeros(1, requires_grad=True)  # the first ADAM step imports torch._dynamo
    dummy.grad = torch.zeros(1)
    torch.optim.Adam([dummy]).step()
    monitor = Monitor(kind, Y, C, val, stream=None)
    spent = [0.0]

    def timed(record, m):                       # monitoring time is not training time
        t = time.perf_counter()
        monitor(record, m)
        spent[0] += time.perf_counter() - t

    if kind == "slimtrain":
        opt = SlimTrain(epochs=epochs, lr=lr, batch_size=batch, memory=memory, seed=seed,
                        alpha1=cfg["loss"]["alpha1"], alpha2=cfg["loss"]["alpha2"])
        init = False
    else:
        init = kind == "adam"
        opt = Adam(max_work_units=2.0 * epochs + (1.0 if init else 0.0), lr=lr,
                   batch_size=batch, seed=seed, alpha1=cfg["loss"]["alpha1"],
                   alpha2=cfg["loss"]["alpha2"])
    t0 = time.perf_counter()
    opt.fit(model, Y, C, counter=monitor.counter, callback=timed, init_linear=init)
    train_s = time.perf_counter() - t0 - spent[0]
    rows = monitor.history.rows
    out = {"kind": kind, "batch": batch, "lr": lr, "memory": memory if kind == "slimtrain"
           else None, "epochs": [r["iteration"] for r in rows],
           "loss": [r["loss"] for r in rows], "val_loss": [r["val_loss"] for r in rows],
           "val_rel_err": [r["val_rel_err"] for r in rows],
           "seconds_per_epoch": train_s / max(epochs, 1),
           "c_scale": float(norm.c_scale)}
    if kind == "slimtrain":
        out["lambda_history"] = opt.lambda_history()
    return out


def fmt(v: float) -> str:
    return f"{v:10.4g}"


def table1(results: list[dict], batches, lrs, epochs: int) -> str:
    def find(kind, b, lr, r=0):
        return next(x for x in results if x["kind"] == kind and x["batch"] == b
                    and x["lr"] == lr and (kind != "slimtrain" or x["memory"] == r))

    head = f"{'':>8} {'method':<22}" + "".join(
        f" {'lr=' + format(lr, 'g'):>21}" for lr in lrs)
    sub = f"{'':>8} {'':<22}" + "".join(f" {'train':>10} {'valid':>10}" for _ in lrs)
    lines = [f"slimTrain table 1: losses after {epochs} epochs (normalised units, 1/(2n) "
             "||W Z - C||^2)", head, sub, "-" * len(sub)]
    kinds = [("slimtrain", "slimTrain, r = 0"), ("adam", "ADAM (W0 by VarPro)"),
             ("adam_w0", "ADAM (W0 = 0)")]
    for b in batches:
        for kind, label in kinds:
            if not any(x["kind"] == kind for x in results):
                continue
            cells = ""
            for lr in lrs:
                x = find(kind, b, lr)
                cells += f" {fmt(x['loss'][-1])} {fmt(x['val_loss'][-1])}"
            lines.append(f"{'|T|=' + str(b):>8} {label:<22}{cells}")
    return "\n".join(lines) + "\n"


def figure5(results, batches, lrs, memories, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(batches), len(lrs), figsize=(4 * len(lrs), 3.3 * len(batches)),
                             squeeze=False, sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, b in enumerate(batches):
        for j, lr in enumerate(lrs):
            ax = axes[i, j]
            for x in results:
                if x["batch"] != b or x["lr"] != lr:
                    continue
                if x["kind"] == "slimtrain":
                    ax.semilogy(x["epochs"], x["loss"], color=colors[memories.index(
                        x["memory"]) % len(colors)], label=f"slimTrain r={x['memory']}")
                elif x["kind"] == "adam":
                    ax.semilogy(x["epochs"], x["loss"], "k-o", ms=3, label="ADAM")
                else:
                    ax.semilogy(x["epochs"], x["loss"], "--", color="gray", label="ADAM W0=0")
            ax.set_title(f"|T_k| = {b}, lr = {lr:g}")
            ax.grid(True, which="both", alpha=0.3)
            if i == len(batches) - 1:
                ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel("training loss")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure6(results, batch, lrs, memories, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(memories), len(lrs), figsize=(4 * len(lrs),
                                                               3 * len(memories)),
                             squeeze=False)
    for i, r in enumerate(memories):
        for j, lr in enumerate(lrs):
            x = next(x for x in results if x["kind"] == "slimtrain" and x["batch"] == batch
                     and x["lr"] == lr and x["memory"] == r)
            img = lambda_image(x["lambda_history"])
            ax = axes[i, j]
            im = ax.imshow(img, aspect="auto", cmap="viridis", interpolation="nearest",
                           extent=(0.5, img.shape[1] + 0.5, img.shape[0] + 0.5, 0.5))
            fig.colorbar(im, ax=ax, label="log10 |Lambda|")
            ax.set_title(f"r = {r}, lr = {lr:g}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("batch")
    fig.suptitle(f"sGCV regularisation parameters, |T_k| = {batch}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="CDR dataset (800 samples, split 400/200/200)")
    p.add_argument("--out", default="bench-output/slimtrain")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-sizes", default="5,10")
    p.add_argument("--lrs", default="1e-3,1e-2,1e-1")
    p.add_argument("--memories", default="0,5,10", help="slimTrain memory depths (figure 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-default", action="store_true",
                   help="skip the default train-surrogate --method slimtrain run")
    p.add_argument("--skip-table", action="store_true",
                   help="skip table 1 and figures 5-6 (e.g. to run the parts in parallel)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batches = [int(v) for v in args.batch_sizes.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    memories = [int(v) for v in args.memories.split(",")]
    if 0 not in memories:
        memories = [0, *memories]
    data = load_split_data(args.data)
    cfg = slimtrain_model_config(resolve_config(merge_config({}), data.problem, args.seed))
    if not args.skip_table:
        table_part(args, cfg, data, batches, lrs, memories, out, device)
    if not args.skip_default:
        rc = default_part(args, out)
        if rc != 0:
            return rc
    bench = {}
    for name in ("table", "default"):
        f = out / f"{name}.json"
        if f.is_file():
            bench[name] = json.loads(f.read_text())
    (out / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    return 0


def table_part(args, cfg, data, batches, lrs, memories, out: Path, device) -> None:
    """Table 1 and figures 5-6; writes table1.txt, table1.json, table.json and the figures."""
    results = []
    for b in batches:
        for lr in lrs:
            jobs = [("slimtrain", r) for r in memories] + [("adam", 0), ("adam_w0", 0)]
            for kind, r in jobs:
                x = run_one(kind, cfg, data, batch=b, lr=lr, memory=r, epochs=args.epochs,
                            seed=args.seed, device=device)
                results.append(x)
                print(f"{kind:<9} |T|={b:<3} lr={lr:<6g} r={r:<3} train {x['loss'][-1]:.4g} "
                      f"valid {x['val_loss'][-1]:.4g} val rel {x['val_rel_err'][-1]:.4f} "
                      f"{x['seconds_per_epoch']:.3f} s/epoch", flush=True)
    text = table1(results, batches, lrs, args.epochs)
    print(text, end="")
    (out / "table1.txt").write_text(text)
    (out / "table1.json").write_text(json.dumps(
        [{k: v for k, v in x.items() if k != "lambda_history"}
         | {"phys_loss": x["loss"][-1] * x["c_scale"] ** 2,
            "phys_val_loss": x["val_loss"][-1] * x["c_scale"] ** 2} for x in results],
        indent=1) + "\n")
    figure5(results, batches, lrs, memories, out / "figure5.png")
    figure6(results, batches[0], lrs, memories, out / "figure6.png")
    table = {"table1": str(out / "table1.txt"), "figure5": str(out / "figure5.png"),
             "figure6": str(out / "figure6.png"),
             "seconds_per_epoch": {
                 f"{x['kind']} b={x['batch']} lr={x['lr']:g} r={x['memory']}":
                     x["seconds_per_epoch"] for x in results}}
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")


def default_part(args, out: Path) -> int:
    """``train-surrogate --method slimtrain`` with all defaults into out/default (resumed if
    interrupted); writes default.json."""
    target = out / "default"
    rc = train_main(["--data", args.data, "--method", "slimtrain", "--quiet", "--threads",
                     str(args.threads), "--device", args.device, "--seed", str(args.seed),
                     "--out", str(target)] + (["--resume"] if (
                         target / "checkpoint").exists() else []))
    if rc != 0:
        return rc
    s = json.loads((target / "summary.json").read_text())
    st = s["slimtrain"]
    with open(target / "history.csv", newline="") as fh:
        wall = [float(r["wall_time"]) for r in csv.DictReader(fh)]
    # epochs 2..N from the history (excludes the one-time set-up in epoch 1)
    per_epoch = (wall[-1] - wall[1]) / max(len(wall) - 2, 1)
    default = {"errors": s["errors"], "epochs": st["epochs"], "wall_time": s["wall_time"],
               "seconds_per_epoch": per_epoch,
               "selected_epoch": s["selected"]["iteration"],
               "lambda_sum": st["lambda_sum"], "device": s["device"]}
    e = s["errors"]["test"]
    print(f"default slimTrain ({st['epochs']} epochs, selected epoch "
          f"{s['selected']['iteration']}): test mean relative error {e['mean']:.4f} ± "
          f"{e['std']:.4f}; {default['seconds_per_epoch']:.3f} s/epoch on {s['device']} "
          "(wall time incl. monitoring and checkpoints)")
    (out / "default.json").write_text(json.dumps(default, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
