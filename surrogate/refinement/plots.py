"""The figure of a refinement run: fresh-solve error against the number of PDE solves."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from solvers.common.atomic import write_bytes_atomic


def plot_error_vs_solves(curves: dict[str, list[dict[str, Any]]], path: Path, *,
                         target: float | None = None, title: str = "") -> None:
    """Mean relative error on the fixed check set against the PDE solves in the training
    data (train + validation), one line per run.

    Parameters
    ----------
    curves : dict
        Label -> the run's rounds (``state.json`` entries with ``n_solves``, ``error`` and
        ``error_stats`` (``median``)).
    target : float, optional
        Drawn as a horizontal line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for k, (label, rounds) in enumerate(curves.items()):
        x = [r["n_solves"] for r in rounds]
        ax.plot(x, [r["error"] for r in rounds], "-o", color=f"C{k}", markersize=4,
                label=f"{label}: mean")
        ax.plot(x, [r["error_stats"]["median"] for r in rounds], ":", color=f"C{k}",
                label=f"{label}: median")
    if target is not None:
        ax.axhline(target, color="k", linestyle="--", linewidth=0.8, label=f"target {target:g}")
    ax.set_yscale("log")
    ax.set_xlabel("PDE solves in the training data (train + validation)")
    ax.set_ylabel("relative error on the fixed fresh check set")
    ax.set_title(title or "refine-surrogate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
