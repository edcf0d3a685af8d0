"""Common interface of the training methods (one level of the multilevel scheme)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

import torch

from surrogate.separable import SeparableModel, augment
from train.varpro import WorkCounter, solve_inner

Callback = Callable[[dict, SeparableModel], str | None]   # a str stops the level (GNvpro)


class Optimizer:
    """Base class: trains a :class:`SeparableModel` in place within a work-unit budget.

    Parameters
    ----------
    alpha1, alpha2 : float
        Tikhonov parameters of theta and W (SPEC section 4: 1e-10).
    max_work_units : float
        Work-unit budget of one call to :meth:`fit` (one level).

    Attributes
    ----------
    model_ : SeparableModel
        The trained model (the object passed to fit).
    work_units_ : float
        Work units spent by the last fit.
    wall_time_ : float
        Seconds spent by the last fit.
    stop_reason_ : str
    """

    method: ClassVar[str] = ""
    needs_linear_init: ClassVar[bool] = False   # W is an unknown (GN, ADAM), not eliminated

    def __init__(self, *, alpha1: float = 1e-10, alpha2: float = 1e-10,
                 max_work_units: float = 200.0) -> None:
        self.alpha1 = alpha1
        self.alpha2 = alpha2
        self.max_work_units = max_work_units

    def fit(self, model: SeparableModel, Y: torch.Tensor, C: torch.Tensor, *,
            counter: WorkCounter | None = None, callback: Callback | None = None,
            init_linear: bool = False) -> Optimizer:
        """Train ``model`` on normalised data.

        Parameters
        ----------
        model : SeparableModel
            Updated in place (theta and W).
        Y : torch.Tensor, shape (n, n_in)
            Normalised training inputs.
        C : torch.Tensor, shape (n, n_out)
            Normalised training targets.
        counter : WorkCounter, optional
            Shared work-unit counter (cumulative over levels).
        callback : callable, optional
            ``callback(record, model)`` at the start and after every iteration (epoch for
            ADAM), with the model holding the current weights.
        init_linear : bool
            Initialise W by the VarPro solve (eq. 2.8) before training (methods that treat W
            as an unknown; GNvpro section 3.1). Costs one forward pass.
        """
        counter = counter if counter is not None else WorkCounter()
        start, t0 = counter.units, time.perf_counter()
        Y = Y.to(dtype=model.W.dtype, device=model.W.device)
        C = C.to(dtype=torch.float64, device=model.W.device)
        if init_linear:
            with torch.no_grad():
                Z_a = augment(model.features(Y))
                counter.add(1)
                model.W.copy_(solve_inner(Z_a, C, self.alpha2).W.to(model.W.dtype))
        self.stop_reason_ = self._run(model, Y, C, counter, start, callback or (lambda r, m: None))
        self.model_ = model
        self.work_units_ = counter.units - start
        self.wall_time_ = time.perf_counter() - t0
        return self

    def _run(self, model: SeparableModel, Y: torch.Tensor, C: torch.Tensor,
             counter: WorkCounter, start: float, callback: Callback) -> str:
        raise NotImplementedError
