"""Error metrics shared by training summaries, evaluate-surrogate and the benchmarks.

The per-sample relative error is SPEC section 4's ||c_pred - c|| / ||c - c_shift|| (c_shift
the training mean for centred targets, DCR SPEC section 2; zero otherwise), in physical units.
"""

from __future__ import annotations

import numpy as np
import torch

SPLITS = ("train", "validation", "test")
#: what the per-sample relative error means, as written into summaries and reports
ERROR_DEFINITION = ("||c_pred - c|| / ||c - c_shift|| per sample, physical units; c_shift = "
                    "training mean if targets are centred, else 0")


def relative_errors(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                    shift: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """Per-sample relative errors ||pred_i - c_i|| / ||c_i - shift|| (SPEC section 4).

    Parameters
    ----------
    pred, target : array, shape (n, m)
    shift : array, shape (m,), optional
        Target centre (the training mean for DCR, SPEC section 2); zero if omitted.

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    pred = torch.as_tensor(pred, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64, device=pred.device)
    ref = target if shift is None else target - torch.as_tensor(
        shift, dtype=torch.float64, device=pred.device)
    diff = pred - target
    # both norms divided by the same per-sample scale, so that values near the float64 limit
    # (targets of magnitude 1e300) do not overflow
    scale = torch.maximum(diff.abs().amax(dim=1), ref.abs().amax(dim=1)) if diff.shape[1] \
        else torch.ones(diff.shape[0], dtype=diff.dtype, device=diff.device)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]
    err = torch.linalg.vector_norm(diff / scale, dim=1) / torch.linalg.vector_norm(
        ref / scale, dim=1)
    return err.cpu().numpy()


def mean_std(err: np.ndarray) -> dict[str, float | int]:
    """``{"mean", "std", "n"}`` of per-sample errors (the training summary's entry)."""
    return {"mean": float(err.mean()), "std": float(err.std()), "n": int(err.size)}


def error_stats(err: np.ndarray) -> dict[str, float]:
    """mean, std, median, p95 and max of per-sample errors (NaN for none)."""
    if err.size == 0:
        return {k: float("nan") for k in ("mean", "std", "median", "p95", "max")}
    return {"mean": float(err.mean()), "std": float(err.std()),
            "median": float(np.median(err)), "p95": float(np.percentile(err, 95)),
            "max": float(err.max())}


def per_observable(pred: np.ndarray, c: np.ndarray, shift: np.ndarray | None
                   ) -> dict[str, np.ndarray]:
    """Per-observable RMSE and relative error over the samples.

    Returns
    -------
    dict
        ``rmse`` (m,), physical units, sqrt(mean_i (pred_ij - c_ij)^2); ``relative`` (m,),
        ||pred_:j - c_:j|| / ||c_:j - shift_j|| over the samples.
    """
    diff = pred - c
    ref = c if shift is None else c - shift
    return {"rmse": np.sqrt(np.mean(diff ** 2, axis=0)),
            "relative": np.linalg.norm(diff, axis=0) / np.linalg.norm(ref, axis=0)}


def format_mean_std(e: dict | None) -> str:
    """``"0.0036 ± 0.0020"`` for a :func:`mean_std` entry, ``"-"`` for None."""
    return "-" if e is None else f"{e['mean']:.4f} ± {e['std']:.4f}"
