"""slimTrain: sampled limited-memory training of separable networks (slimTrain Algorithm 3.1).

Each iteration takes one mini-batch, forward-propagates it (features ``A_k(theta_{k-1})``),
updates the linear weights W by the slimTik step (eqs. 3.6-3.7, :mod:`train.slimtik`) with
the features of the last r batches kept as they were computed (eq. 3.8) and Lambda_k chosen by
sampled GCV (eqs. 3.4-3.5, n = batch size x number of targets rows), and then takes one ADAM
step on theta for the batch loss at the new W (eq. 2.14, reusing the forward pass).

Work units as for ADAM (GNvpro section 3.1): a batch of b of the n training samples costs one
forward and one backward pass over the fraction b / n, i.e. 2 b / n, so an epoch costs 2
(the slimTik step and the sGCV search act on the stored features and cost no passes). History
rows are written once per epoch with the objective on the whole training set (monitoring
passes are not counted). The last batch of an epoch may be smaller (as in :mod:`train.adam`).

Resuming: :meth:`SlimTrain.resume_state` returns everything the next epoch depends on (the
model is saved separately): the ADAM moments, the slimTik memory, float64 W and Lambda sum,
the Lambda history, the state of the shuffling generator and the epoch count;
:meth:`SlimTrain.restore` loads it before :meth:`fit`, which then continues from that epoch
to the same result as an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable

import numpy as np
import torch

from solvers.common.atomic import write_text_atomic
from surrogate.separable import SeparableModel, augment
from train.adam import full_loss
from train.base import Callback, Optimizer
from train.history import save_figure
from train.slimtik import SlimTik
from train.varpro import WorkCounter

EpochHook = Callable[["SlimTrain", SeparableModel], None]


class SlimTrain(Optimizer):
    """slimTrain (Algorithm 3.1): slimTik + sGCV for W, ADAM for theta.

    Parameters
    ----------
    alpha1 : float
        Tikhonov parameter of theta (in the ADAM loss, eq. 2.14).
    alpha2 : float
        Only in the reported objective (the slimTik Lambdas regularise W).
    max_work_units : float
        Work-unit budget of one fit (default: no limit besides ``epochs``).
    epochs : int
        Number of passes over the training set.
    lr : float
        ADAM learning rate of theta (slimTrain section 4.2: 1e-2 is the best row of table 1).
    batch_size : int
        Mini-batch size (paper: 5 or 10).
    memory : int
        Memory depth r (number of earlier batches whose features enter the slimTik step).
    lambda_min, lambda_max : float
        Bounds of the sGCV search over log10 |Lambda| (:func:`train.slimtik.select_lambda`).
    allow_negative : bool
        Let sGCV also choose negative Lambdas (the running sum stays positive).
    lambda_fixed : float, optional
        Fixed Lambda at every iteration instead of sGCV.
    grid_points : int
        Grid of the sGCV search.
    betas, eps
        ADAM constants (PyTorch defaults).
    seed : int
        Seed of the mini-batch shuffling.

    Attributes
    ----------
    lambdas_ : list of float
        Lambda_k of every iteration (all fits since the last restore).
    lambda_epochs_ : list of int
        Epoch (1-based) of each entry of ``lambdas_``.
    lambda_sum_ : float
        Sum of the Lambdas.
    epochs_done_ : int
    epoch_hook : callable or None
        ``epoch_hook(opt, model)`` after every finished epoch (checkpointing); not a setting.
    """

    method = "slimtrain"
    needs_linear_init = False

    def __init__(self, *, alpha1: float = 1e-10, alpha2: float = 1e-10,
                 max_work_units: float = math.inf, epochs: int = 300, lr: float = 1e-2,
                 batch_size: int = 10, memory: int = 0, lambda_min: float = 1e-8,
                 lambda_max: float = 1e4, lambda_fixed: float | None = None,
                 grid_points: int = 25, allow_negative: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 seed: int = 0) -> None:
        super().__init__(alpha1=alpha1, alpha2=alpha2, max_work_units=max_work_units)
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.memory = memory
        self.lambda_min = lambda_min
        self.lambda_max = lambda_max
        self.lambda_fixed = lambda_fixed
        self.grid_points = grid_points
        self.allow_negative = allow_negative
        self.betas = betas
        self.eps = eps
        self.seed = seed
        self.epoch_hook: EpochHook | None = None
        self._restored: tuple[dict[str, torch.Tensor], dict] | None = None

    def _check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.memory < 0 or not self.lr >= 0:
            raise ValueError(
                f"slimTrain settings: need epochs >= 1 (got {self.epochs!r}), batch_size >= 1 "
                f"({self.batch_size!r}), memory >= 0 ({self.memory!r}), lr >= 0 ({self.lr!r})")
        if not 0 < self.lambda_min <= self.lambda_max:
            raise ValueError(f"slimTrain Lambda bounds [{self.lambda_min!r}, "
                             f"{self.lambda_max!r}]: need 0 < lambda_min <= lambda_max")

    # ---- resumable state -------------------------------------------------------------------

    def restore(self, state: tuple[dict[str, torch.Tensor], dict]) -> SlimTrain:
        """Continue the next :meth:`fit` from a :meth:`resume_state` (arrays, values)."""
        self._restored = state
        return self

    def resume_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(arrays, JSON values) after the last finished epoch of the running fit."""
        arrays, values = self._tik.state()
        arrays = {f"tik.{k}": v for k, v in arrays.items()}
        arrays["rng"] = self._gen.get_state()
        adam = self._adam.state_dict()["state"]
        keys = {}
        for i, st in adam.items():
            keys[str(i)] = sorted(st)
            for k, v in st.items():
                arrays[f"adam.{i}.{k}"] = torch.as_tensor(v).detach().cpu()
        arrays["lambda_epochs"] = torch.tensor(self.lambda_epochs_, dtype=torch.int64)
        values = {"tik": values, "adam_keys": keys, "epoch": self.epochs_done_,
                  "start_units": self._start_units}
        return arrays, values

    # ---- training --------------------------------------------------------------------------

    def _run(self, model: SeparableModel, Y: torch.Tensor, C: torch.Tensor,
             counter: WorkCounter, start: float, callback: Callback) -> str:
        self._check()
        n = Y.shape[0]
        b = min(self.batch_size, n)
        theta = list(model.features.parameters())
        self._adam = torch.optim.Adam(theta, lr=self.lr, betas=self.betas, eps=self.eps)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._tik = SlimTik(model.W.detach(), memory=self.memory, lambda_min=self.lambda_min,
                            lambda_max=self.lambda_max, lambda_fixed=self.lambda_fixed,
                            grid_points=self.grid_points,
                            allow_negative=self.allow_negative)
        self.epochs_done_, self.lambda_epochs_, self._start_units = 0, [], start
        if self._restored is not None:
            self._load(*self._restored)
            self._restored = None
        limit = self._start_units + self.max_work_units
        dt = model.W.dtype

        def report(epoch: int) -> None:
            with torch.no_grad():
                loss = float(full_loss(model, Y, C, self.alpha1, self.alpha2))
            callback({"iteration": epoch, "loss": loss}, model)

        if self.epochs_done_ == 0:
            report(0)
        try:
            while self.epochs_done_ < self.epochs:
                epoch = self.epochs_done_ + 1
                perm = torch.randperm(n, generator=self._gen).to(Y.device)
                for i in range(0, n, b):
                    idx = perm[i:i + b]
                    cost = 2.0 * len(idx) / n
                    if counter.units + cost > limit + 1e-9:
                        if i > 0:
                            report(epoch)
                        return "budget"
                    Cb = C[idx]
                    Z_a = augment(model.features(Y[idx]))                     # 1 forward
                    self._tik.update(Z_a.detach(), Cb)                         # lines 9-11
                    self.lambda_epochs_.append(epoch)
                    W = self._tik.W.to(dt)
                    with torch.no_grad():
                        model.W.copy_(W)
                    R = (Z_a @ W.T).to(torch.float64) - Cb
                    loss = 0.5 * (R**2).sum() / len(idx)
                    if self.alpha1:
                        loss = loss + 0.5 * self.alpha1 * sum(
                            (p.to(torch.float64) ** 2).sum() for p in theta)
                    self._adam.zero_grad(set_to_none=True)
                    loss.backward()                                            # 1 backward
                    self._adam.step()
                    counter.add(cost)
                self.epochs_done_ = epoch
                report(epoch)
                if self.epoch_hook is not None:
                    self.epoch_hook(self, model)
            return "epochs"
        finally:
            self.lambdas_ = list(self._tik.lambdas)
            self.lambda_sum_ = self._tik.lambda_sum

    def _load(self, arrays: dict[str, torch.Tensor], values: dict) -> None:
        tik = {k.removeprefix("tik."): v for k, v in arrays.items() if k.startswith("tik.")}
        self._tik.load_state(tik, values["tik"])
        self._gen.set_state(arrays["rng"].to(torch.uint8))
        state = {}
        params = self._adam.param_groups[0]["params"]
        for i, keys in values["adam_keys"].items():
            p = params[int(i)]
            st = {}
            for k in keys:
                v = arrays[f"adam.{i}.{k}"]
                st[k] = v.clone() if k == "step" else v.to(dtype=p.dtype, device=p.device)
            state[int(i)] = st
        sd = self._adam.state_dict()
        self._adam.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
        self.epochs_done_ = int(values["epoch"])
        self.lambda_epochs_ = arrays["lambda_epochs"].tolist()
        self._start_units = float(values["start_units"])

    def lambda_history(self) -> list[dict]:
        """Rows (step, epoch, batch, Lambda, Lambda_sum) of every slimTik step so far."""
        rows, total, batch, last = [], 0.0, 0, None
        for k, (lam, ep) in enumerate(zip(self.lambdas_, self.lambda_epochs_, strict=True)):
            batch = batch + 1 if ep == last else 1
            last = ep
            total += lam
            rows.append({"step": k + 1, "epoch": ep, "batch": batch, "Lambda": lam,
                         "Lambda_sum": total})
        return rows


def write_lambda_history(rows: list[dict], path: str | os.PathLike) -> None:
    """CSV of :meth:`SlimTrain.lambda_history` (written atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=("step", "epoch", "batch", "Lambda", "Lambda_sum"),
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})
    write_text_atomic(path, buf.getvalue())


def read_lambda_history(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{"step": int(r["step"]), "epoch": int(r["epoch"]), "batch": int(r["batch"]),
                 "Lambda": float(r["Lambda"]), "Lambda_sum": float(r["Lambda_sum"])}
                for r in csv.DictReader(fh)]


def lambda_image(rows: list[dict]) -> np.ndarray:
    """log10 |Lambda| as an image, batches (rows) x epochs (columns); NaN where missing."""
    n_ep = max((r["epoch"] for r in rows), default=0)
    n_b = max((r["batch"] for r in rows), default=0)
    img = np.full((n_b, n_ep), np.nan)
    for r in rows:
        img[r["batch"] - 1, r["epoch"] - 1] = math.log10(abs(r["Lambda"]))
    return img


def plot_lambda_history(panels: dict[str, list[dict]], path: str | os.PathLike,
                        title: str = "") -> None:
    """Regularisation parameters as in slimTrain figures 4 and 6: for each panel an image of
    log10 |Lambda_k| (vertical: batch within the epoch, horizontal: epoch) and below it the
    positive and negative Lambdas (absolute values) and their running sum against the
    iteration.

    Parameters
    ----------
    panels : dict
        Panel title -> rows of :meth:`SlimTrain.lambda_history`.
    path : path
        PNG file (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(len(panels), 1)
    fig, axes = plt.subplots(2, k, figsize=(4.2 * k, 6.5), squeeze=False)
    for j, (name, rows) in enumerate(panels.items()):
        img = lambda_image(rows)
        ax = axes[0, j]
        if img.size:
            im = ax.imshow(img, aspect="auto", origin="upper", cmap="viridis",
                           interpolation="nearest",
                           extent=(0.5, img.shape[1] + 0.5, img.shape[0] + 0.5, 0.5))
            fig.colorbar(im, ax=ax, label="log10 |Lambda|")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("batch in epoch")
        ax = axes[1, j]
        steps = [r["step"] for r in rows]
        for sign, label in ((1, "Lambda_k > 0"), (-1, "-Lambda_k (< 0)")):
            pts = [(r["step"], sign * r["Lambda"]) for r in rows if sign * r["Lambda"] > 0]
            if pts:
                ax.semilogy(*zip(*pts, strict=True), ".", ms=2, label=label)
        ax.semilogy(steps, [r["Lambda_sum"] for r in rows], "-", label="sum of Lambdas")
        ax.set_xlabel("iteration")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save_figure(fig, path, title, dpi=100)
