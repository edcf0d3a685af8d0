"""The evaluation report as text: the printed summary table and ``report.md``.

Both take the report dict of :func:`surrogate.evaluation.report.write_report` (or a loaded
``report.json``, whose NaN are null).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from surrogate.evaluation.uncertainty import markdown_lines, summary_lines
from surrogate.metrics import format_mean_std


def summary_table(report: dict[str, Any]) -> str:
    """The printed summary: errors per split and fresh, the cost and the training box."""
    f = report["fresh"]
    pending = report.get("n_pending") or 0
    lines = [f"evaluate-surrogate: {report['model']} ({report['problem']}) on "
             f"{report['n_fresh']} fresh samples ({report['n_failed']} failed solves"
             + (f", {pending} samples pending (not solved yet)" if pending else "")
             + ", not evaluated)",
             f"{'data':<11} {'n':>6} {'mean ± std':>19} {'median':>8} {'p95':>8} {'max':>8}"]
    for s in ("train", "validation", "test"):
        e = report["splits"].get(s)
        if e:
            lines.append(f"{s:<11} {e['n']:>6} {_mean_std(e):>19} {'':>8} {'':>8} {'':>8}")
    lines.append(f"{'fresh':<11} {report['n_fresh']:>6} {_mean_std(f):>19} "
                 f"{f['median']:>8.4f} {f['p95']:>8.4f} {f['max']:>8.4f}")
    lines += _scale_free_lines(report.get("scale_free"))
    lines.append(_cost_line(report["cost"]))
    out = report.get("outside_training_box")
    if out is not None:
        lines.append(f"outside the training box: {out['n_samples_outside']} of "
                     f"{report['n_fresh']} fresh samples")
    lines += summary_lines(report)
    return "\n".join(lines) + "\n"


def _scale_free_lines(sf: dict[str, Any] | None) -> list[str]:
    """``scale-free: relative Frobenius error ... R^2 ...`` per data set (none for old
    reports)."""
    if not sf:
        return []
    parts = [f"{k} {_g4(v['relative_frobenius'])} (R^2 min {_g4(v['r2_min'])}, median "
             f"{_g4(v['r2_median'])})" for k, v in sf.items() if isinstance(v, dict)]
    return [f"scale-free error (rel. Frobenius of standardised outputs): {'; '.join(parts)}"]


def _cost_line(cost: dict[str, Any]) -> str:
    """``cost: PDE solve ... s (median); surrogate cpu: ... (speed-up ...)``."""
    pde = cost["pde_seconds_per_solve"]
    pde_txt = "unknown" if pde is None or not np.isfinite(pde) else f"{pde:.4g} s"

    def speed(v: float | None) -> str:
        return "-" if v is None or not np.isfinite(v) else f"{v:.3g}x"

    ref = cost.get("pde_seconds_per_solve_training_data")
    if ref is not None and np.isfinite(ref):
        pde_txt += f", training data {ref:.4g} s"
    return (f"cost: PDE solve {pde_txt} (median); surrogate {cost['device']}: "
            f"{cost['surrogate_seconds_single']:.3g} s single "
            f"(speed-up {speed(cost['speedup_single'])}), "
            f"{cost['surrogate_seconds_per_sample_batched']:.3g} s/sample batched "
            f"(speed-up {speed(cost['speedup_batched'])})")


def markdown(report: dict[str, Any]) -> str:
    """Short report.md: error table, cost, worst samples, training box, figures, notes."""
    lines = [f"# Evaluation of `{report['model']}`", "",
             f"Problem **{report['problem']}**, fresh data `{report['fresh_data']}` "
             f"({report['mode']}): {report['n_fresh']} samples evaluated, "
             f"{report['n_failed']} solver failures (counted, not evaluated)"
             + (f", {report['n_pending']} samples pending in the file (not solved yet, not "
                "evaluated)" if report.get("n_pending") else "") + ".", "",
             f"Error: {report['error_definition']}.", "",
             "| data | n | mean | std | median | p95 | max |", "|---|---|---|---|---|---|---|"]
    for s, e in report["splits"].items():
        lines.append(f"| {s} | {e['n']} | {e['mean']:.4g} | {e['std']:.4g} | | | |")
    f = report["fresh"]
    lines.append(f"| **fresh** | {report['n_fresh']} | {f['mean']:.4g} | {f['std']:.4g} | "
                 f"{f['median']:.4g} | {f['p95']:.4g} | {f['max']:.4g} |")
    lines += _scale_free_section(report.get("scale_free"))
    lines += _cost_section(report["cost"]) + _worst_section(report["worst"])
    lines += _box_section(report.get("outside_training_box"))
    lines += markdown_lines(report)
    if report["figures"]:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({path})" for name, path in report["figures"].items()]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _scale_free_section(sf: dict[str, Any] | None) -> list[str]:
    if not sf:
        return []
    lines = ["", "## Scale-free errors", "", f"{sf['definition']}; standardised by the "
             f"{sf['standardisation']}.", "",
             "| data | relative Frobenius | R^2 min | R^2 median |", "|---|---|---|---|"]
    lines += [f"| {k} | {_g4(v['relative_frobenius'])} | {_g4(v['r2_min'])} | "
              f"{_g4(v['r2_median'])} |" for k, v in sf.items() if isinstance(v, dict)]
    return lines


def _cost_section(cost: dict[str, Any]) -> list[str]:
    return ["", "## Cost", "",
            "| | seconds | speed-up |", "|---|---|---|",
            f"| PDE solve (median) | {_g(cost['pde_seconds_per_solve'])} | 1 |",
            f"| PDE solve (median over the training data) | "
            f"{_g(cost.get('pde_seconds_per_solve_training_data'))} | |",
            f"| surrogate, single sample ({cost['device']}) | "
            f"{_g(cost['surrogate_seconds_single'])} | {_g(cost['speedup_single'])} |",
            f"| surrogate, per sample in a batch of {cost['batch_size']} | "
            f"{_g(cost['surrogate_seconds_per_sample_batched'])} | "
            f"{_g(cost['speedup_batched'])} |"]


def _worst_section(worst: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Worst samples", "", "| sample | error | parameters |", "|---|---|---|"]
    for w in worst:
        params = ", ".join(f"{k}={v:.4g}" for k, v in list(w["parameters"].items())[:6])
        more = " ..." if len(w["parameters"]) > 6 else ""
        lines.append(f"| {w['sample']} | {w['error']:.4g} | {params}{more} |")
    return lines


def _box_section(out: dict[str, Any] | None) -> list[str]:
    if out is None:
        return []
    lines = ["", "## Training box", "",
             f"{out['n_samples_outside']} fresh samples lie outside the training "
             f"parameter box ({out['box_source']}).", ""]
    flagged = {k: v for k, v in out["per_parameter"].items() if v["n_below"] or v["n_above"]}
    if flagged:
        lines += ["| parameter | lower | upper | below | above |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['lower']:.4g} | {v['upper']:.4g} | {v['n_below']} | "
                  f"{v['n_above']} |" for k, v in flagged.items()]
    return lines


def _mean_std(s: dict[str, Any] | None) -> str:
    """``"0.0036 ± 0.0020"``, or ``"-"`` for a missing entry or a null mean."""
    return "-" if not s or s.get("mean") is None else format_mean_std(s)


def _g(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3g}"


def _g4(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.4g}"
