"""Memory estimate of a training run, checked before any large allocation.

The estimate (bytes) adds the terms that grow with the settings, for the finest level
(``d`` time steps, ``N`` network parameters, ``n`` training samples, width ``w``, ``m``
targets, ``b`` bytes per network number):

- parameters and their copies (model, prolongation, selected model, checkpoint, gradient):
  ``8 N b``;
- the Krylov basis of GNvpro/GN, ``min(r_max, work_units_per_level / 2) (N [+ m (w + 1)]) 8``;
  the L-BFGS pairs ``2 memory N 8``; ADAM's moments ``2 N b``;
- the autograd graph of one forward pass over the training set kept for the Jacobian
  products (GN methods; ADAM: one mini-batch), about ``60 n w d b``, and the per-node
  layer matrices ``6 (d + 1) w^2 b``;
- data, residuals and features in float64, ``8 (6 n m + 3 n (w + 1))``;
- slimTrain (its own network: ``[slimtrain]`` width and depth, :func:`train.config.
  slimtrain_model_config`): ADAM's moments of theta, the slimTik memory of ``r + 1``
  batches of ``b`` features ``8 (r + 1) b (w + 1)``, its SVD and normal-equation matrices
  ``8 (3 (w + 1)^2 + 4 m (w + 1))``, and the autograd graph of one batch.

It is an order-of-magnitude guard against settings that cannot fit (``width = 100000`` needs
terabytes), not a prediction of the peak.
"""

from __future__ import annotations

import os

import torch

from train.config import slimtrain_model_config
from train.errors import MemoryEstimateError

GIB = 1024**3


def parameter_count(architecture: str, n_in: int, width: int, n_steps: int) -> int:
    """Number of network parameters theta (without W) at ``n_steps`` steps."""
    nodes = n_steps + 1 if architecture == "neural_ode" else n_steps
    return width * (n_in + 1) + nodes * (width * width + width)


def estimate_training_bytes(cfg: dict, method: str, n_train: int, n_in: int, n_out: int
                            ) -> dict[str, float]:
    """Estimated memory of training ``method`` with the resolved configuration ``cfg``.

    Returns
    -------
    dict term -> bytes, with the keys "parameters", "optimizer", "activations", "data" and
    "total".
    """
    if method == "slimtrain":
        cfg = slimtrain_model_config(cfg)  # slimTrain trains its own network
    mc = cfg["model"]
    w = int(mc["width"])
    m = cfg.get(method, {})             # a method without a section of its own: ADAM-like
    levels = m.get("levels", mc["levels"])
    d = int(max(levels))
    b = 4 if mc["dtype"] == "float32" else 8
    n_par = parameter_count(mc["architecture"], n_in, w, d)
    if method == "slimtrain":
        rows = (int(m["memory"]) + 1) * min(int(m["batch_size"]), n_train)
        optimizer = 2.0 * b * n_par + 8.0 * (rows * (w + 1) + 3 * (w + 1) ** 2
                                             + 4 * n_out * (w + 1))
    elif "r_max" in m:
        r = min(int(m["r_max"]), int(max(_as_list(m.get("work_units_per_level", 400))) // 2) + 1)
        size = n_par + (n_out * (w + 1) if method == "gn" else 0)
        optimizer = 8.0 * r * size
    elif "memory" in m:
        optimizer = 16.0 * int(m["memory"]) * n_par
    else:
        optimizer = 2.0 * b * n_par
    n_graph = min(int(m.get("batch_size", n_train)), n_train)
    terms = {
        "parameters": 8.0 * b * n_par,
        "optimizer": optimizer,
        "activations": 60.0 * n_graph * w * d * b + 6.0 * (d + 1) * w * w * b,
        "data": 8.0 * (6 * n_train * n_out + 3 * n_train * (w + 1)),
    }
    terms["total"] = sum(terms.values())
    return terms


def available_bytes(device: torch.device) -> float | None:
    """Free memory of ``device`` (CUDA: free device memory; CPU: MemAvailable of
    /proc/meminfo, else the physical memory); None when it cannot be told."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


_CULPRITS = {
    "parameters": "model.width (parameters grow as width^2 x time steps) and model.levels",
    "optimizer": "model.width and {method}.r_max / {method}.memory (stored vectors of the size "
                 "of the network)",
    "activations": "the number of training samples x model.width x model.levels[-1] (or "
                   "adam.batch_size)",
    "data": "the number of training samples x observables",
}


def check_memory(cfg: dict, method: str, n_train: int, n_in: int, n_out: int,
                 device: torch.device, available: float | None = None) -> None:
    """Refuse a run whose estimate exceeds the free memory of ``device``.

    Raises
    ------
    MemoryEstimateError
        Naming the settings behind the largest term, the estimate and the free memory.
    """
    est = estimate_training_bytes(cfg, method, n_train, n_in, n_out)
    free = available_bytes(device) if available is None else available
    if free is None or est["total"] <= free:
        return
    worst = max((k for k in est if k != "total"), key=est.__getitem__)
    mc = cfg["model"]
    network = f"model.width = {mc['width']}, model.levels = {mc['levels']}"
    culprit = _CULPRITS[worst].format(method=method)
    if method == "slimtrain":                      # its own network: [slimtrain] width, depth
        st = cfg["slimtrain"]
        network = f"slimtrain.width = {st['width']}, slimtrain.depth = {st['depth']}"
        culprit = culprit.replace("model.width", "slimtrain.width").replace(
            "model.levels[-1]", "slimtrain.depth").replace("model.levels", "slimtrain.depth")
    raise MemoryEstimateError(
        f"{method} with {network} on {n_train} training samples needs about "
        f"{est['total'] / GIB:.3g} GiB ({worst}: {est[worst] / GIB:.3g} GiB), more than the "
        f"{free / GIB:.3g} GiB free on {device}; reduce {culprit}")


def _as_list(budget) -> list[float]:
    """Work units per level as a list (a number stands for every level)."""
    return [float(b) for b in budget] if isinstance(budget, list) else [float(budget)]
