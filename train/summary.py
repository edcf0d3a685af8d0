"""The errors of a trained model per split and the GNvpro table 2 rows of ``train-surrogate``.

The statistics are those of :mod:`surrogate.metrics` (shared with evaluate-surrogate and the
benchmarks): per-sample relative errors ``||c_pred - c|| / ||c - c_shift||`` in physical units
(:data:`surrogate.metrics.ERROR_DEFINITION`), summarised as mean ± std.
"""

from __future__ import annotations

import numpy as np

from datasets.split_data import SplitData
from surrogate.metrics import (
    SPLITS,
    conditioning,
    conditioning_note,
    format_mean_std,
    mean_std,
    output_statistics,
    relative_errors,
    scale_free_errors,
)
from surrogate.separable import SeparableModel

#: method -> name in tables, plot legends and titles
LABELS = {"gn": "Full GN", "adam": "ADAM", "lbfgsvpro": "L-BFGSvpro", "gnvpro": "GNvpro",
          "slimtrain": "slimTrain"}


def split_errors(model: SeparableModel, data: SplitData) -> dict[str, dict]:
    """Mean ± std of the per-sample relative errors of each non-empty split.

    Parameters
    ----------
    model : SeparableModel
        Its predictions are in physical units; targets are shifted by the training mean when
        the model centres them (DCR, SPEC section 2).
    data : SplitData
        Inputs (n_split, n_in) and targets (n_split, n_out) per split.

    Returns
    -------
    dict
        split -> ``{"mean", "std", "n"}`` (:func:`surrogate.metrics.mean_std`).
    """
    shift = model.normalizer.c_shift.cpu().numpy() if model.normalizer.center_targets else None
    out = {}
    for s in SPLITS:
        if data.y[s].shape[0] == 0:
            continue
        out[s] = mean_std(relative_errors(model.predict(data.y[s]), data.c[s], shift))
    return out


def scale_free_summary(model: SeparableModel, data: SplitData) -> dict:
    """Scale-free figures per split, the conditioning of the per-sample relative error and
    the notes of the summary (:data:`surrogate.metrics.SCALE_FREE_DEFINITION`).

    Parameters
    ----------
    model : SeparableModel
    data : SplitData
        The training split's targets (n_train, n_out) fix the standardisation.

    Returns
    -------
    dict
        ``scale_free``: split -> :func:`surrogate.metrics.scale_free_errors`;
        ``conditioning``: split -> :func:`surrogate.metrics.conditioning`; ``notes``: list of
        sentences (one naming the ill-conditioned splits, if any).
    """
    shift = model.normalizer.c_shift.cpu().numpy() if model.normalizer.center_targets else None
    mean, std = output_statistics(data.c["train"])
    out: dict = {"scale_free": {}, "conditioning": {}, "notes": []}
    for s in SPLITS:
        if data.y[s].shape[0] == 0:
            continue
        out["scale_free"][s] = scale_free_errors(model.predict(data.y[s]), data.c[s], mean, std)
        out["conditioning"][s] = conditioning(data.c[s], shift)
    note = conditioning_note(out["conditioning"])
    if note:
        out["notes"].append(note)
    return out


def _sf(s: dict, split: str) -> str:
    """The relative Frobenius error of ``split`` in a summary, or "-"."""
    v = s.get("scale_free", {}).get(split, {}).get("relative_frobenius")
    return "-" if v is None or not np.isfinite(v) else f"{v:.4f}"


def table(summaries: list[dict]) -> str:
    """GNvpro table 2 style rows (one per run summary): errors per split, the test split's
    scale-free error (relative Frobenius error of standardised outputs, "-" for summaries
    without it), work units, wall time in seconds; then the summaries' notes."""
    head = (f"{'method':<12} {'training':>17} {'validation':>17} {'test':>17} "
            f"{'test scale-free':>15} {'work units':>10} {'wall [s]':>9}")
    lines = [head, "-" * len(head)]
    notes: list[str] = []
    for s in summaries:
        e = s["errors"]
        lines.append(f"{LABELS[s['method']]:<12} {format_mean_std(e.get('train')):>17} "
                     f"{format_mean_std(e.get('validation')):>17} "
                     f"{format_mean_std(e.get('test')):>17} {_sf(s, 'test'):>15} "
                     f"{s['work_units']:>10.1f} {s['wall_time']:>9.1f}")
        notes += [f"note ({LABELS[s['method']]}): {n}" for n in s.get("notes", [])
                  if f"note ({LABELS[s['method']]}): {n}" not in notes]
    return "\n".join(lines + notes) + "\n"


def scale_free_table(summary: dict) -> str:
    """Per split of one summary: the relative Frobenius error of standardised outputs, the
    smallest and the median R^2 over the outputs and the largest RMSE (physical units); ""
    for a summary without scale-free figures."""
    sf = summary.get("scale_free")
    if not sf:
        return ""
    head = (f"{'scale-free':<12} {'rel. Frobenius':>14} {'R^2 min':>9} {'R^2 median':>10} "
            f"{'RMSE max':>10}")
    lines = [head, "-" * len(head)]
    for split, e in sf.items():
        rmse = [v for v in e["rmse"] if v is not None and np.isfinite(v)]
        lines.append(f"{split:<12} {_num(e['relative_frobenius'], '.4f'):>14} "
                     f"{_num(e['r2_min'], '.4f'):>9} {_num(e['r2_median'], '.4f'):>10} "
                     f"{_num(max(rmse) if rmse else None, '.3g'):>10}")
    return "\n".join(lines) + "\n"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None or not np.isfinite(v) else format(v, fmt)
