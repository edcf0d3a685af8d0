"""Optimisers and models from the resolved training configuration (:mod:`train.config`).

Used by ``train-surrogate`` (:mod:`train.run`) and by the benchmarks (bench/), so that both
build exactly the same optimiser and initial model from the same settings and seed.
"""

from __future__ import annotations

import copy

import torch

from datasets.split_data import SplitData
from surrogate.encoding import periodic_encoding
from surrogate.normalization import Normalizer
from surrogate.separable import SeparableModel, augment, build_extractor
from train.adam import Adam
from train.base import Optimizer
from train.gauss_newton import GaussNewton
from train.gnvpro import GNvpro
from train.lbfgs_vpro import LBFGSvpro
from train.slimtrain import SlimTrain
from train.varpro import WorkCounter, solve_inner


def level_budgets(method: str, cfg: dict) -> list[float] | None:
    """Work units of each level when ``work_units_per_level`` is a list, else None.

    Parameters
    ----------
    method : str
        A section of ``cfg`` (one of :data:`train.config.METHODS` except slimtrain).
    cfg : dict
        The resolved configuration.
    """
    budget = cfg[method].get("work_units_per_level")
    return [float(b) for b in budget] if isinstance(budget, list) else None


def make_optimizer(method: str, cfg: dict, seed: int) -> tuple[Optimizer, list[int]]:
    """Optimiser for one level and the list of levels (time steps per level).

    Parameters
    ----------
    method : str
        One of :data:`train.config.METHODS`.
    cfg : dict
        The resolved configuration (:func:`train.config.resolve_config`; for slimTrain after
        :func:`train.config.slimtrain_model_config`).
    seed : int
        Seed of ADAM's and slimTrain's mini-batches.
    """
    if method == "slimtrain":
        return make_slimtrain(cfg, seed)
    loss = cfg["loss"]
    m = cfg[method]
    budgets = level_budgets(method, cfg)
    common = {"alpha1": loss["alpha1"], "alpha2": loss["alpha2"],
              "max_work_units": budgets[0] if budgets else m["work_units_per_level"]}
    if method == "gnvpro":
        opt = GNvpro(**common, r_max=m["r_max"], krylov_tol=m["krylov_tol"],
                     max_iter=m["max_iter"], grad_tol=m["grad_tol"], grad_rtol=m["grad_rtol"],
                     carry_radius=bool(m.get("carry_radius", False)),
                     output_basis_tol=float(m.get("output_basis_tol", 0.0)))
        return opt, cfg["model"]["levels"]
    if method == "gn":
        opt = GaussNewton(**common, r_max=m["r_max"], krylov_tol=m["krylov_tol"],
                          max_iter=m["max_iter"], grad_tol=m["grad_tol"],
                          grad_rtol=m["grad_rtol"])
        return opt, cfg["model"]["levels"]
    if method == "lbfgsvpro":
        return LBFGSvpro(**common, memory=m["memory"], max_iter=m["max_iter"],
                         grad_tol=m["grad_tol"], grad_rtol=m["grad_rtol"]), cfg["model"]["levels"]
    return Adam(**common, lr=m["lr"], batch_size=m["batch_size"], seed=seed), m["levels"]


def make_slimtrain(cfg: dict, seed: int) -> tuple[SlimTrain, list[int]]:
    """slimTrain from the [slimtrain] section: one level of ``depth`` steps.

    Parameters
    ----------
    cfg : dict
        The resolved configuration.
    seed : int
        Seed of the mini-batches.
    """
    st = cfg["slimtrain"]
    opt = SlimTrain(alpha1=cfg["loss"]["alpha1"], alpha2=cfg["loss"]["alpha2"],
                    epochs=st["epochs"], lr=st["lr"], batch_size=st["batch_size"],
                    memory=st["memory"], lambda_min=st["lambda_min"],
                    lambda_max=st["lambda_max"], grid_points=st["grid_points"],
                    allow_negative=st["allow_negative"],
                    lambda_fixed=st["lambda_fixed"] if st["regularization"] == "fixed" else None,
                    seed=seed)
    return opt, [st["depth"]]


def build_model(cfg: dict, data: SplitData, levels: list[int], seed: int,
                device: torch.device) -> SeparableModel:
    """Randomly initialised model on the first level, normalisation fitted on training data.

    Parameters
    ----------
    cfg : dict
        The resolved configuration ([model] and [normalization]).
    data : SplitData
        Its training split, shapes (n_train, n_in) and (n_train, n_out), fits the normaliser.
    levels : list of int
        Time steps per level; the network starts with ``levels[0]``.
    seed : int
        Seed of the initial weights.
    device : torch.device
    """
    mc = cfg["model"]
    encoding = periodic_encoding(data.n_in, mc.get("periodic_inputs"))
    n_in = encoding.n_out if encoding is not None else data.n_in
    features = {"architecture": mc["architecture"], "n_in": n_in, "width": mc["width"],
                "n_steps": levels[0], "final_time": mc["final_time"]}
    if mc["architecture"] == "neural_ode":
        features["gamma"] = mc["gamma"]
        features["init_scale"] = mc["init_scale"]
        if mc.get("max_step_radius"):
            features["max_step_radius"] = mc["max_step_radius"]
    gen = torch.Generator().manual_seed(seed)
    extractor = build_extractor(features, generator=gen, dtype=getattr(torch, mc["dtype"]),
                                device=device)
    norm = Normalizer(n_in, data.n_out,
                      standardize_inputs=cfg["normalization"]["standardize_inputs"],
                      center_targets=cfg["normalization"]["center_targets"],
                      scale_targets=cfg["normalization"].get("scale_targets", "global"))
    y_train = torch.as_tensor(data.y["train"])
    norm.fit(encoding(y_train) if encoding is not None else y_train,
             torch.as_tensor(data.c["train"]))
    return SeparableModel(extractor, data.n_out, norm, encoding).to(device)


def warm_up(model: SeparableModel, Y: torch.Tensor) -> None:
    """Untimed forward, backward and double-backward pass on two samples, so that the one-time
    set-up of the autograd engine is not charged to the wall time of the first method.

    Parameters
    ----------
    model : SeparableModel
    Y : torch.Tensor, shape (n, n_in)
        Encoded training inputs (n >= 1; the first two samples are used).
    """
    x = Y[:2].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).square().sum(), x, create_graph=True)
    torch.autograd.grad(g.sum(), x)
    dummy = torch.zeros(1, requires_grad=True)      # the first torch.optim step imports
    dummy.grad = torch.zeros(1)                     # torch._dynamo (seconds; ADAM, slimTrain)
    torch.optim.Adam([dummy]).step()


def training_config(method: str, cfg: dict) -> dict:
    """The configuration the network is built with while training: ``model.dtype`` float32
    when ``[gnvpro] float32_features`` is on (GNvpro only), else ``cfg`` itself."""
    if method == "gnvpro" and cfg["gnvpro"].get("float32_features") \
            and cfg["model"]["dtype"] != "float32":
        cfg = copy.deepcopy(cfg)
        cfg["model"]["dtype"] = "float32"
    return cfg


@torch.no_grad()
def promote(model: SeparableModel, dtype: torch.dtype, Y: torch.Tensor, C: torch.Tensor,
            alpha2: float, counter: WorkCounter | None = None) -> SeparableModel:
    """A copy of a model trained with float32 features in ``dtype``, with W re-solved in
    float64 for the features computed in ``dtype`` (VarPro, GNvpro eq. 2.8; 1 work unit).

    Parameters
    ----------
    model : SeparableModel
    dtype : torch.dtype
        Of the returned network (``model.dtype`` of the configuration).
    Y : torch.Tensor, shape (n, n_in)
        Encoded, normalised training inputs (any floating dtype; float64 recommended).
    C : torch.Tensor, shape (n, n_out)
        Normalised training targets.
    alpha2 : float
        Tikhonov parameter of W.
    counter : WorkCounter, optional
    """
    if model.W.dtype == dtype:
        return model
    new = copy.deepcopy(model).to(dtype)
    Z_a = augment(new.features(Y.to(dtype=dtype, device=new.W.device)))
    if counter is not None:
        counter.add(1)
    new.W.copy_(solve_inner(Z_a, C, alpha2).W.to(dtype))
    return new
