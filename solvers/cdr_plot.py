"""Figures and gathered fields of the CDR solver (rank 0 writes; matplotlib on demand)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from solvers.common.atomic import write_atomic

if TYPE_CHECKING:
    from solvers.cdr import CDRResult, CDRSolver


def gather_field(solver: CDRSolver, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Gather owned nodal values on rank 0 of ``solver.comm`` (collective).

    Parameters
    ----------
    solver : CDRSolver
    values : ndarray, shape (n_local,)
        Nodal values of this rank; the first ``solver.n_owned_dofs()`` are its own.

    Returns
    -------
    (ndarray, ndarray) or None
        On rank 0 ``(coords (N, 2), values (N,))`` of all N = (n_cells + 1)^2 nodes, sorted
        by x2 then x1; None on the other ranks.
    """
    n_owned = solver.n_owned_dofs()
    coords = solver.function_space.tabulate_dof_coordinates()[:n_owned, :2]
    parts = solver.comm.gather((coords, np.asarray(values)[:n_owned]), root=0)
    if solver.comm.rank != 0:
        return None
    assert parts is not None  # gather returns the list on the root
    xy = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    order = np.lexsort((xy[:, 0], xy[:, 1]))
    return xy[order], vals[order]


def plot_solution(solver: CDRSolver, result: CDRResult, path: str | Path) -> None:
    """Figure: u at the last output time with the observation points, and c(t) per point.

    Parameters
    ----------
    solver : CDRSolver
    result : CDRResult
        From ``solver.run(y, keep_fields=True)``.
    path : str or Path
        Output image; the format follows the suffix (PNG by default), written atomically.

    Collective; rank 0 writes.
    """
    gathered = gather_field(solver, result.fields[-1])
    if gathered is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy, vals = gathered
    n = solver.n_cells + 1
    field_img = vals.reshape(n, n)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    im = ax0.imshow(field_img, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
    fig.colorbar(im, ax=ax0, label="u")
    ax0.scatter(solver.points[:, 0], solver.points[:, 1], s=60, facecolors="none",
                edgecolors="white", linewidths=1.5)
    for p, (x1, x2) in enumerate(solver.points):
        ax0.annotate(str(p), (x1, x2), xytext=(5, 4), textcoords="offset points", color="white")
    ax0.set(xlabel="$x_1$", ylabel="$x_2$",
            title=f"u at t = {solver.output_times[-1]:g} ({solver.n_cells}$^2$ Q1 cells)")
    obs = result.observables.reshape(solver.output_times.size, solver.points.shape[0])
    for p in range(obs.shape[1]):
        ax1.plot(solver.output_times, obs[:, p], "o-", ms=3, label=f"point {p}")
    ax1.set(xlabel="t", ylabel="u(x_p, t)", title="observables c")
    ax1.legend(fontsize=8)
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format=fmt, dpi=120), "figure")
    finally:
        plt.close(fig)


__all__ = ["gather_field", "plot_solution"]


def save_fields(solver: CDRSolver, result: CDRResult, path: str | Path) -> None:
    """Write u at the output times to ``path`` (.npz, atomically, rank 0; collective):
    arrays x (N, 2) node coordinates, t (T,) output times, u (T, N) nodal values."""
    gathered = [gather_field(solver, f) for f in result.fields]
    if solver.comm.rank == 0:  # rank 0 holds every gathered field
        fields = [g for g in gathered if g is not None]
        xy = fields[0][0]
        u = np.stack([g[1] for g in fields])
        write_atomic(path, lambda fh: np.savez(fh, x=xy, t=solver.output_times, u=u),
                     "--fields")
