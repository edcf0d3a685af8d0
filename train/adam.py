"""ADAM baseline on the full problem (theta, W) with mini-batches (GNvpro section 3.1).

W is initialised by the VarPro solve on the first level. A mini-batch of b samples costs
2 b / n work units (forward and backward over a fraction b / n of the training set), so one
epoch costs 2 work units. History rows are written once per epoch with the loss on the whole
training set (monitoring passes are not counted).
"""

from __future__ import annotations

import torch

from surrogate.separable import SeparableModel
from train.base import Callback, Optimizer
from train.varpro import WorkCounter


def full_loss(model: SeparableModel, Y: torch.Tensor, C: torch.Tensor, alpha1: float,
              alpha2: float) -> torch.Tensor:
    """Phi(W, theta) of eq. 2.2 with the least-squares loss on the rows (Y, C)."""
    R = model(Y).to(torch.float64) - C
    theta_sq = sum((p.to(torch.float64) ** 2).sum() for p in model.features.parameters())
    return (0.5 * (R**2).sum() / Y.shape[0] + 0.5 * alpha1 * theta_sq
            + 0.5 * alpha2 * (model.W.to(torch.float64) ** 2).sum())


class Adam(Optimizer):
    """Stochastic ADAM on (theta, W).

    Parameters
    ----------
    alpha1, alpha2, max_work_units
        See :class:`train.base.Optimizer`.
    lr : float
        Learning rate (paper: 1e-3).
    batch_size : int
        Mini-batch size (paper: 2).
    betas, eps
        ADAM constants (PyTorch defaults).
    seed : int
        Seed of the mini-batch shuffling.
    """

    method = "adam"
    needs_linear_init = True

    def __init__(self, *, alpha1: float = 1e-10, alpha2: float = 1e-10,
                 max_work_units: float = 600.0, lr: float = 1e-3, batch_size: int = 2,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 seed: int = 0) -> None:
        super().__init__(alpha1=alpha1, alpha2=alpha2, max_work_units=max_work_units)
        self.lr = lr
        self.batch_size = batch_size
        self.betas = betas
        self.eps = eps
        self.seed = seed

    def _run(self, model: SeparableModel, Y: torch.Tensor, C: torch.Tensor,
             counter: WorkCounter, start: float, callback: Callback) -> str:
        n = Y.shape[0]
        b = min(self.batch_size, n)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, betas=self.betas, eps=self.eps)
        gen = torch.Generator().manual_seed(self.seed)
        limit = start + self.max_work_units

        def report(epoch: int) -> None:
            with torch.no_grad():
                loss = float(full_loss(model, Y, C, self.alpha1, self.alpha2))
            callback({"iteration": epoch, "loss": loss}, model)

        report(0)
        epoch = 0
        while True:
            perm = torch.randperm(n, generator=gen).to(Y.device)
            for i in range(0, n, b):
                idx = perm[i:i + b]
                cost = 2.0 * len(idx) / n
                if counter.units + cost > limit + 1e-9:
                    if i > 0:
                        report(epoch + 1)
                    return "budget"
                opt.zero_grad(set_to_none=True)
                full_loss(model, Y[idx], C[idx], self.alpha1, self.alpha2).backward()
                opt.step()
                counter.add(cost)
            epoch += 1
            report(epoch)
