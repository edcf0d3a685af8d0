"""The errors of a trained model per split and the GNvpro table 2 rows of ``train-surrogate``.

The statistics are those of :mod:`surrogate.metrics` (shared with evaluate-surrogate and the
benchmarks): per-sample relative errors ``||c_pred - c|| / ||c - c_shift||`` in physical units
(:data:`surrogate.metrics.ERROR_DEFINITION`), summarised as mean ± std.
"""

from __future__ import annotations

from datasets.split_data import SplitData
from surrogate.metrics import SPLITS, format_mean_std, mean_std, relative_errors
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


def table(summaries: list[dict]) -> str:
    """GNvpro table 2 style rows (one per run summary): errors per split, work units, wall
    time in seconds."""
    head = (f"{'method':<12} {'training':>17} {'validation':>17} {'test':>17} "
            f"{'work units':>10} {'wall [s]':>9}")
    lines = [head, "-" * len(head)]
    for s in summaries:
        e = s["errors"]
        lines.append(f"{LABELS[s['method']]:<12} {format_mean_std(e.get('train')):>17} "
                     f"{format_mean_std(e.get('validation')):>17} "
                     f"{format_mean_std(e.get('test')):>17} "
                     f"{s['work_units']:>10.1f} {s['wall_time']:>9.1f}")
    return "\n".join(lines) + "\n"
