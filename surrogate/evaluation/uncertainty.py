"""The calibration part of an evaluation report, for surrogates with a predictive std
(ensembles, ``train-surrogate --ensemble K``).

On the fresh samples (and the training file's test split when it is still there):

* coverage of the +-1 sigma and +-2 sigma intervals over all observables of all samples
  (Gaussian values 0.6827 and 0.9545), with the calibrated std and with the raw spread;
* the Spearman rank correlation between each sample's predicted relative error
  ``||std_i|| / ||mean_i - c_shift||`` and its actual relative error
  ``||mean_i - c_i|| / ||c_i - c_shift||``;
* a reliability figure ``calibration.png``: observed vs expected coverage of the central
  intervals ``mean +- z_p std``, and predicted vs actual per-sample error.

The statistics are those of :mod:`surrogate.uncertainty` (shared with the training summary).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from solvers.common.atomic import write_bytes_atomic
from surrogate.metrics import relative_errors
from surrogate.uncertainty import (
    calibration_summary,
    confidence_word,
    predicted_relative_error,
    spearman_ceiling,
)
from surrogate.uq_model import OutOfBoxWarning

#: the figure written into the report directory
FIGURE = "calibration.png"


def uncertainty_report(model: Any, y: np.ndarray, c: np.ndarray, shift: np.ndarray | None,
                       split: Any | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's ``uncertainty`` entry and the arrays of the figure.

    Parameters
    ----------
    model : surrogate.ensemble.EnsembleSurrogate
        ``predict(y, return_std=True)`` and ``std_scale``.
    y, c : numpy.ndarray, shapes (n, p), (n, m)
        Fresh parameters and observables (physical units).
    shift : numpy.ndarray, shape (m,), optional
        Target centre of the relative errors.
    split : datasets.split_data.SplitData, optional
        The training file's splits (its test split is evaluated too).

    Returns
    -------
    entry : dict
        ``std_scale``, ``calibrated_on``, ``verdict`` (of the raw spread), ``fresh`` and
        ``fresh_raw`` (:func:`surrogate.uncertainty.calibration_summary`, calibrated and raw
        spread), ``spearman_ceiling`` (:func:`surrogate.uncertainty.spearman_ceiling` on the
        fresh inputs: the rank correlation a perfectly calibrated ensemble would reach),
        ``test`` (calibrated, when the test split is available),
        ``per_sample_predicted_error`` (n,).
    arrays : dict
        ``predicted`` and ``actual`` per-sample errors of the fresh samples (figure).
    """
    with warnings.catch_warnings():      # the report counts out-of-box samples itself
        warnings.simplefilter("ignore", OutOfBoxWarning)
        mean, std = model.predict(y, return_std=True)
        members = model.predict_members(y)
        if split is not None and split.y["test"].shape[0]:
            mean_t, std_t = model.predict(split.y["test"], return_std=True)
    scale = float(model.std_scale)
    raw = std / scale if scale > 0 else std
    cal = (model.metadata.get("ensemble") or {}).get("calibration") or {}
    entry: dict[str, Any] = {
        "ensemble_size": len(getattr(model, "members", [])),
        "std_scale": scale, "calibrated_on": cal.get("split"),
        "verdict": confidence_word(scale),
        "fresh": calibration_summary(mean, std, c, shift),
        "fresh_raw": calibration_summary(mean, raw, c, shift),
        "spearman_ceiling": spearman_ceiling(members, shift, model.ddof),
    }
    if split is not None and split.y["test"].shape[0]:
        entry["test"] = calibration_summary(mean_t, std_t, split.c["test"], shift)
    predicted = predicted_relative_error(mean, std, shift)
    entry["per_sample_predicted_error"] = predicted.tolist()
    return entry, {"predicted": predicted, "actual": relative_errors(mean, c, shift)}


def plot_calibration(entry: dict[str, Any], arrays: dict[str, np.ndarray], path: Path,
                     title: str = "") -> None:
    """Reliability diagram (observed vs expected coverage, fresh samples calibrated and raw,
    test split) and predicted vs actual per-sample relative error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.8))
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="ideal")
    curves = [("fresh", "fresh, calibrated", "C0", "-o"),
              ("fresh_raw", "fresh, raw spread", "C1", ":s"), ("test", "test split", "C2", "-^")]
    for key, label, color, style in curves:
        if key in entry:
            r = entry[key]["reliability"]
            ax.plot(r["expected"], r["observed"], style, color=color, markersize=3,
                    label=f"{label} (2σ: {entry[key]['coverage_2sigma']:.3f})")
    for k, p in ((1, 0.6827), (2, 0.9545)):
        ax.axvline(p, color="grey", linewidth=0.5, alpha=0.6)
        ax.text(p, 0.02, f"±{k}σ", fontsize=8, ha="right")
    ax.set_xlabel("expected coverage of mean ± z_p std")
    ax.set_ylabel("observed coverage (all observables)")
    ax.set_title(f"reliability (std_scale {entry['std_scale']:.3g})")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    pred, act = arrays["predicted"], arrays["actual"]
    bx.scatter(pred, act, s=8, alpha=0.6, edgecolors="none")
    pos = np.concatenate([pred[pred > 0], act[act > 0]])
    if pos.size:
        lo, hi = float(pos.min()), float(pos.max())
        bx.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
        bx.set_xscale("log")
        bx.set_yscale("log")
        from matplotlib.ticker import NullFormatter

        bx.xaxis.set_minor_formatter(NullFormatter())
    bx.set_xlabel("predicted relative error ||std|| / ||mean - c_shift||")
    bx.set_ylabel("actual relative error")
    bx.set_title(f"per fresh sample: Spearman {entry['fresh']['spearman']:.2f}")
    bx.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Lines for the printed summary (none without an ``uncertainty`` entry)."""
    u = report.get("uncertainty")
    if not u:
        return []
    f = u["fresh"]
    lines = [f"uncertainty (ensemble, std_scale {u['std_scale']:.3g}, raw spread "
             f"{u['verdict']}): fresh +-1 sigma coverage {f['coverage_1sigma']:.3f} (Gaussian "
             f"0.683), +-2 sigma {f['coverage_2sigma']:.3f} (0.954), rank correlation of "
             f"predicted vs actual error {_num(f['spearman'])} (a perfectly calibrated "
             f"ensemble: {_num(u.get('spearman_ceiling'))})"]
    if "test" in u:
        t = u["test"]
        lines.append(f"uncertainty on the test split: +-1/2 sigma coverage "
                     f"{t['coverage_1sigma']:.3f}/{t['coverage_2sigma']:.3f}, rank correlation "
                     f"{_num(t['spearman'])}")
    return lines


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """The ``## Predictive uncertainty`` section of report.md (none without the entry)."""
    u = report.get("uncertainty")
    if not u:
        return []
    lines = ["", "## Predictive uncertainty", "",
             f"Ensemble of {u['ensemble_size']} members; std = {u['std_scale']:.4g} x the "
             f"members' spread (factor fitted on the {u['calibrated_on'] or '?'} split; the "
             f"raw spread was **{u['verdict']}**).", "",
             "| data | n | ±1σ coverage | ±2σ coverage | rank correlation | rms z |",
             "|---|---|---|---|---|---|",
             ]
    for key, label in (("fresh", "fresh"), ("fresh_raw", "fresh, raw spread"),
                       ("test", "test split")):
        if key in u:
            s = u[key]
            lines.append(f"| {label} | {s['n_samples']} | {s['coverage_1sigma']:.3f} | "
                         f"{s['coverage_2sigma']:.3f} | {_num(s['spearman'])} | "
                         f"{_num(s['rms_z'])} |")
    lines += ["", "Gaussian values: 0.683 (±1σ), 0.954 (±2σ); coverage over all observables of "
              "all samples; rank correlation: Spearman, predicted ||std|| / ||mean - c_shift|| "
              "vs actual relative error per sample. With a member as the truth (a perfectly "
              "calibrated ensemble) the rank correlation on these inputs would be "
              f"{_num(u.get('spearman_ceiling'))}: the ceiling set by how widely a realised "
              "error norm scatters around its expected size."]
    return lines


def _num(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"
