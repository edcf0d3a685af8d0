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


# --------------------------------------------------------------------------- scale-free figures
#: what the scale-free figures mean, as written into summaries and reports
SCALE_FREE_DEFINITION = (
    "relative Frobenius error ||(C_pred - C) / s||_F / ||(C - mu) / s||_F of the outputs "
    "standardised by the training split's per-output mean mu and standard deviation s "
    "(outputs constant on the training split left out); R^2_j = 1 - sum_i (c_pred_ij - c_ij)^2 "
    "/ sum_i (c_ij - mean_i c_ij)^2 and RMSE_j = sqrt(mean_i (c_pred_ij - c_ij)^2) (physical "
    "units) per output j over the split's samples")
#: the per-sample relative error is called ill-conditioned on a split when some sample's
#: ||c - c_shift|| is below this fraction of the split's median (a prediction error of 1 % of
#: the typical target norm then shows as more than 100 % on that sample), or is zero
ILL_CONDITIONED_FRACTION = 0.01
#: outputs whose training standard deviation is at most this fraction of the largest one
#: count as constant (left out of the standardised error)
CONSTANT_OUTPUT_RTOL = 1e-12


def output_statistics(c_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output mean and standard deviation of training targets, the standardisation of
    :func:`scale_free_errors`.

    Parameters
    ----------
    c_train : numpy.ndarray, shape (n, m)
        Training targets, physical units.

    Returns
    -------
    mean : numpy.ndarray, shape (m,)
    std : numpy.ndarray, shape (m,)
        Population standard deviation; 0 marks an output constant on the training split
        (at most :data:`CONSTANT_OUTPUT_RTOL` times the largest standard deviation).
    """
    c = np.asarray(c_train, dtype=np.float64)
    mean = c.mean(axis=0)
    std = c.std(axis=0)
    top = float(std.max()) if std.size else 0.0
    std = np.where(std > CONSTANT_OUTPUT_RTOL * top, std, 0.0)
    return mean, std


def relative_frobenius(pred: np.ndarray, target: np.ndarray, mean: np.ndarray,
                       std: np.ndarray) -> float:
    """Relative Frobenius error of standardised outputs, ||(P - C) / s||_F / ||(C - mu) / s||_F.

    Parameters
    ----------
    pred, target : numpy.ndarray, shape (n, m)
        Predictions and targets, physical units.
    mean, std : numpy.ndarray, shape (m,)
        Training statistics (:func:`output_statistics`); outputs with ``std == 0`` are left
        out.

    Returns
    -------
    float
        NaN when no output varies or the split is empty.
    """
    keep = np.asarray(std) > 0
    if not keep.any() or np.asarray(target).shape[0] == 0:
        return float("nan")
    s = np.asarray(std, dtype=np.float64)[keep]
    diff = (np.asarray(pred, dtype=np.float64)[:, keep] - np.asarray(target)[:, keep]) / s
    ref = (np.asarray(target, dtype=np.float64)[:, keep] - np.asarray(mean)[keep]) / s
    den = float(np.linalg.norm(ref))
    return float(np.linalg.norm(diff)) / den if den > 0 else float("nan")


def r2_rmse(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficient of determination and root-mean-square error per output.

    Parameters
    ----------
    pred, target : numpy.ndarray, shape (n, m)

    Returns
    -------
    r2 : numpy.ndarray, shape (m,)
        1 - SS_res / SS_tot with the split's own mean (as ``sklearn.metrics.r2_score``);
        NaN for an output constant on the split.
    rmse : numpy.ndarray, shape (m,)
        Physical units.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    ss_res = ((pred - target) ** 2).sum(axis=0)
    ss_tot = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
    rmse = np.sqrt(ss_res / max(target.shape[0], 1))
    return r2, rmse


def scale_free_errors(pred: np.ndarray, target: np.ndarray, mean: np.ndarray,
                      std: np.ndarray) -> dict:
    """The scale-free figures of one split (:data:`SCALE_FREE_DEFINITION`).

    Parameters
    ----------
    pred, target : numpy.ndarray, shape (n, m)
        Physical units.
    mean, std : numpy.ndarray, shape (m,)
        Training statistics (:func:`output_statistics`).

    Returns
    -------
    dict
        ``relative_frobenius`` (float), ``r2`` and ``rmse`` (lists of m floats),
        ``r2_min``, ``r2_median`` (over the outputs with a defined R^2) and
        ``n_constant_outputs``; undefined values (NaN) are None, so the dict is valid JSON.
    """
    r2, rmse = r2_rmse(pred, target)
    ok = r2[np.isfinite(r2)]
    return {"relative_frobenius": _json_float(relative_frobenius(pred, target, mean, std)),
            "r2_min": float(ok.min()) if ok.size else None,
            "r2_median": float(np.median(ok)) if ok.size else None,
            "r2": [_json_float(v) for v in r2], "rmse": [_json_float(v) for v in rmse],
            "n_constant_outputs": int(np.count_nonzero(np.asarray(std) <= 0))}


def _json_float(v: float) -> float | None:
    """``v`` as a float, None for NaN or inf (JSON has neither)."""
    v = float(v)
    return v if np.isfinite(v) else None


def conditioning(target: np.ndarray, shift: np.ndarray | None = None) -> dict:
    """How well conditioned the per-sample relative error is on one split.

    Parameters
    ----------
    target : numpy.ndarray, shape (n, m)
    shift : numpy.ndarray, shape (m,), optional
        As in :func:`relative_errors`.

    Returns
    -------
    dict
        ``min_over_median`` (smallest ||c_i - shift|| over the median; None for an empty
        split), ``n_small`` (samples below :data:`ILL_CONDITIONED_FRACTION` of the median) and
        ``ill_conditioned`` (bool: n_small > 0).
    """
    ref = np.asarray(target, dtype=np.float64)
    if shift is not None:
        ref = ref - np.asarray(shift, dtype=np.float64)
    if ref.shape[0] == 0:
        return {"min_over_median": None, "n_small": 0, "ill_conditioned": False}
    norms = np.linalg.norm(ref, axis=1)
    med = float(np.median(norms))
    if not med > 0:
        return {"min_over_median": 0.0, "n_small": int(np.count_nonzero(norms <= 0)),
                "ill_conditioned": True}
    small = norms < ILL_CONDITIONED_FRACTION * med
    return {"min_over_median": float(norms.min() / med), "n_small": int(small.sum()),
            "ill_conditioned": bool(small.any())}


def conditioning_note(split: str | dict[str, dict], cond: dict | None = None) -> str | None:
    """One sentence for summaries when the per-sample relative error is ill-conditioned.

    Parameters
    ----------
    split : str or dict
        The split's name with its :func:`conditioning` ``cond``; or a dict split ->
        conditioning (one sentence for all ill-conditioned splits).
    cond : dict, optional
        With a split name.

    Returns
    -------
    str or None
        None when no split is ill-conditioned.
    """
    conds = {split: cond} if isinstance(split, str) else dict(split)
    bad = {s: c for s, c in conds.items() if c and c.get("ill_conditioned")}
    if not bad:
        return None
    names = list(bad)
    where = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    counts = ", ".join(str(c["n_small"]) for c in bad.values())
    smallest = min(c["min_over_median"] for c in bad.values())
    return (f"the per-sample relative error is ill-conditioned on the {where} "
            f"split{'s' if len(names) > 1 else ''}: {counts} sample(s) have "
            f"||c - c_shift|| below {ILL_CONDITIONED_FRACTION:.0%} of the median (smallest: "
            f"{smallest:.2g} of it), so its mean is dominated by near-zero targets; compare "
            "models by the scale-free figures (relative Frobenius error of standardised "
            "outputs, R^2)")
