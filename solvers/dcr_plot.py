"""Figures of the DC-resistivity solver (rank 0 writes; matplotlib on demand)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from solvers.common.atomic import write_atomic

if TYPE_CHECKING:
    from solvers.dcr import DCRSolver


def plot_solution(solver: DCRSolver, y: Any, c: np.ndarray, path: str | Path) -> None:
    """Save a PNG: conductivity slices and the D1, D2 observable images.

    Top row: log m on horizontal slices (parallel to x1-x2) at four heights, as in GNvpro
    fig. 9, with the electrodes marked. Bottom row: D1 and D2 as n_receivers x n_receivers
    images (GNvpro fig. 4; colours clipped at the 95th percentile of |D| so that the structure
    away from the electrodes shows), and log m on the vertical cell slice nearest x2 = L2 / 2.

    Parameters
    ----------
    solver : DCRSolver
    y : array_like, shape (3,)
        Parameters whose conductivity is shown.
    c : ndarray, shape (n_observables,)
        Observables (potential differences per unit current).
    path : str or Path
        Output image (the format follows the suffix, PNG by default), written atomically by
        rank 0 of ``solver.comm`` only.
    """
    if solver.comm.rank != 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_m = np.log(solver.conductivity(y))
    L1, L2, L3 = solver.domain
    n1, n2, n3 = solver.n_cells
    colours = dict(vmin=0.0, vmax=max(log_m.max(), 1e-12), cmap="viridis")
    electrodes = np.array([solver.source_plus, solver.source_minus])
    fig, axes = plt.subplots(2, 4, figsize=(16, 8), constrained_layout=True)
    for ax, height in zip(axes[0], np.linspace(0.2, 0.8, 4) * L3, strict=True):
        k = min(int(height / solver.h[2]), n3 - 1)
        im = ax.imshow(log_m[:, :, k].T, origin="lower", extent=(0, L1, 0, L2), **colours)
        ax.plot(electrodes[:, 0], electrodes[:, 1], "wx")
        ax.set(title=f"log m, x3 = {(k + 0.5) * solver.h[2]:.3f}", xlabel="x1", ylabel="x2")
    fig.colorbar(im, ax=axes[0, -1], label="log m")

    n = solver.n_receivers
    r = solver.observable_coords()["receiver_x1"][:n]
    half = solver.receiver_spacing / 2
    extent = (r[0] - half, r[-1] + half, r[0] - half, r[-1] + half)
    c = np.asarray(c)
    for block, label in enumerate(("D1", "D2")):
        image = c[block * n * n:(block + 1) * n * n].reshape(n, n, order="F")   # [i, j]
        limit = max(np.percentile(np.abs(image), 95), 1e-300)
        ax = axes[1, block]
        im = ax.imshow(image.T, origin="lower", extent=extent, cmap="RdBu_r", vmin=-limit,
                       vmax=limit)
        ax.set(title=f"{label} (clipped at +-{limit:.3g})", xlabel="receiver x1",
               ylabel="receiver x2")
        fig.colorbar(im, ax=ax)
    ax = axes[1, 2]
    im = ax.imshow(log_m[:, n2 // 2, :].T, origin="lower", extent=(0, L1, 0, L3),
                   aspect="auto", **colours)
    ax.set(title=f"log m, x2 = {(n2 // 2 + 0.5) * solver.h[1]:.3f}", xlabel="x1", ylabel="x3")
    axes[1, 3].axis("off")
    y = np.asarray(y, dtype=float)
    fig.suptitle(f"DCR ({n1} x {n2} x {n3} cells): y = (depth {y[0]:.3f}, size {y[1]:.3f}, "
                 f"angle {y[2]:.3f})")
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format=fmt, dpi=100), "figure")
    finally:
        plt.close(fig)


__all__ = ["plot_solution"]
