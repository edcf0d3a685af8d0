"""Training history (one row per iteration), its CSV file and the convergence plot."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from solvers.common.atomic import write_bytes_atomic, write_text_atomic

COLUMNS = ("method", "level", "n_steps", "iteration", "loss", "val_loss", "train_rel_err",
           "val_rel_err", "work_units", "wall_time", "grad_norm", "step_norm", "radius", "rho",
           "krylov_rank", "rejected", "train_scale_free", "val_scale_free")
"""CSV columns. ``iteration`` counts accepted iterations within a level (epochs for ADAM),
``work_units`` and ``wall_time`` are cumulative over levels, ``loss`` is the training
objective (normalised units, regularisation included), ``val_loss`` the data term
1/(2 n_val) ||W Z - C||^2 on the validation split, and the relative errors are means of
||c_pred - c|| / ||c - c_shift|| over the samples; ``*_scale_free`` are the relative
Frobenius errors of the standardised outputs (:mod:`surrogate.metrics`, training-split
statistics). Empty cells: not applicable."""

_INT_COLUMNS = {"level", "n_steps", "iteration", "krylov_rank", "rejected"}


class History:
    """Rows of training history.

    Parameters
    ----------
    rows : sequence of dict, optional
        Each with keys from :data:`COLUMNS` (missing keys = not applicable).
    """

    def __init__(self, rows: Sequence[dict] | None = None) -> None:
        self.rows: list[dict] = [dict(r) for r in rows or []]

    def append(self, row: dict) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown history columns {sorted(unknown)}")
        self.rows.append(dict(row))

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """Column as a float array (NaN where not applicable)."""
        return np.array([np.nan if r.get(name) is None else float(r[name]) for r in self.rows])

    def level_starts(self) -> list[float]:
        """Work units at which each level after the first starts."""
        starts, last = [], None
        for r in self.rows:
            if last is not None and r["level"] != last:
                starts.append(float(r["work_units"]))
            last = r["level"]
        return starts

    def to_csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
        return buf.getvalue()

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the CSV file atomically."""
        write_text_atomic(path, self.to_csv_text())

    @classmethod
    def read_csv(cls, path: str | os.PathLike) -> History:
        rows = []
        with open(path, newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                rows.append({k: _parse(k, v) for k, v in rec.items() if v not in ("", None)})
        return cls(rows)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def _parse(key: str, value: str):
    if key == "method":
        return value
    if key in _INT_COLUMNS:
        return int(value)
    return float(value)


def plot_convergence(histories: dict[str, History], path: str | os.PathLike,
                     title: str = "") -> None:
    """Loss vs work units with dashed lines at the level boundaries (GNvpro figure 2).

    Parameters
    ----------
    histories : dict
        Method name -> history.
    path : path
        PNG file (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for name, hist in histories.items():
        wu = hist.column("work_units")
        (line,) = axes[0].semilogy(wu, hist.column("loss"), label=name)
        axes[1].semilogy(wu, hist.column("val_loss"), color=line.get_color(), label=name)
        for x in hist.level_starts():
            for ax in axes:
                ax.axvline(x, color=line.get_color(), linestyle="--", linewidth=0.8, alpha=0.6)
    axes[0].set_title("training loss")
    axes[1].set_title("validation loss")
    for ax in axes:
        ax.set_xlabel("work units")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save_figure(fig, path, title, dpi=110)


def save_figure(fig, path: str | os.PathLike, title: str | None = None, dpi: int = 100) -> None:
    """Give ``fig`` its title, lay it out and write it as PNG to ``path`` atomically; closes it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes_atomic(Path(path), buf.getvalue())
