"""Figures of ``evaluate-surrogate``: GNvpro figures 3 and 4, a parity plot and an error
histogram (matplotlib, Agg backend; every file written atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from solvers.common.atomic import write_bytes_atomic

#: samples shown as columns in the observables image (GNvpro figure 3)
N_COLUMNS = 10
#: samples shown in the DCR receiver images (GNvpro figure 4)
N_DCR_SAMPLES = 3
#: at most this many points in the parity plot (a seeded subsample beyond it)
MAX_PARITY_POINTS = 200_000


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def plot_observable_columns(c: np.ndarray, pred: np.ndarray, sample_ids: np.ndarray,
                            path: Path, title: str = "") -> None:
    """GNvpro figure 3: observables of a few samples as an image (rows: observables,
    columns: samples), the prediction and the absolute difference.

    Parameters
    ----------
    c, pred : numpy.ndarray, shape (k, m)
        True and predicted observables of the k samples shown.
    sample_ids : numpy.ndarray, shape (k,)
        Their indices in the fresh file (column labels).
    """
    plt = _pyplot()
    diff = np.abs(pred - c)
    lo, hi = float(min(c.min(), pred.min())), float(max(c.max(), pred.max()))
    fig, axes = plt.subplots(1, 3, figsize=(12, 5), sharey=True)
    panels = (("PDE solve c", c.T, "viridis", (lo, hi)),
              ("surrogate prediction", pred.T, "viridis", (lo, hi)),
              ("|prediction - c|", diff.T, "magma", (0.0, float(diff.max()) or 1.0)))
    for ax, (name, img, cmap, (vmin, vmax)) in zip(axes, panels, strict=True):
        im = ax.imshow(img, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("fresh sample")
        ax.set_xticks(range(len(sample_ids)), [str(i) for i in sample_ids], fontsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)
    axes[0].set_ylabel("observable index")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def receiver_grid(values: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Arrange per-receiver values on the receiver grid, shape (n_x2, n_x1), row = x2."""
    u1, i1 = np.unique(x1, return_inverse=True)
    u2, i2 = np.unique(x2, return_inverse=True)
    grid = np.full((u2.size, u1.size), np.nan)
    grid[i2, i1] = values
    return grid


def plot_dcr_images(c: np.ndarray, pred: np.ndarray, coords: dict[str, np.ndarray],
                    sample_ids: np.ndarray, path: Path, shift: np.ndarray | None = None
                    ) -> None:
    """GNvpro figure 4: D1 and D2 on the receiver grid (21 x 21 for the SPEC set-up) for a few
    samples: truth, prediction and difference.

    Parameters
    ----------
    c, pred : numpy.ndarray, shape (k, m)
    coords : dict
        ``receiver_x1``, ``receiver_x2`` and ``direction`` (1: D1, 2: D2), each (m,).
    shift : numpy.ndarray, shape (m,), optional
        Target centre (the training mean, SPEC section 2); truth and prediction are shown
        centred, ``c - shift``, which shows the body's response rather than the source's.
    """
    plt = _pyplot()
    if shift is not None:
        c, pred = c - shift, pred - shift
    k = len(sample_ids)
    fig, axes = plt.subplots(2 * k, 3, figsize=(10, 3.2 * 2 * k), squeeze=False)
    x1, x2, direction = (np.asarray(coords[n]) for n in ("receiver_x1", "receiver_x2",
                                                          "direction"))
    for s in range(k):
        for d in (1, 2):
            sel = direction == d
            truth = receiver_grid(c[s, sel], x1[sel], x2[sel])
            model = receiver_grid(pred[s, sel], x1[sel], x2[sel])
            lim = float(np.nanmax(np.abs(truth))) or 1.0
            row = axes[2 * s + d - 1]
            extent = (x1[sel].min(), x1[sel].max(), x2[sel].min(), x2[sel].max())
            for ax, img, name, cmap, vlim in (
                    (row[0], truth, "PDE", "RdBu_r", lim), (row[1], model, "surrogate", "RdBu_r",
                                                            lim),
                    (row[2], model - truth, "difference", "RdBu_r",
                     float(np.nanmax(np.abs(model - truth))) or 1.0)):
                im = ax.imshow(img, origin="lower", extent=extent, cmap=cmap, vmin=-vlim,
                               vmax=vlim)
                centred = " - mean" if shift is not None and name != "difference" else ""
                ax.set_title(f"sample {sample_ids[s]}: D{d} {name}{centred}", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    _save(fig, path)


def plot_parity(c: np.ndarray, pred: np.ndarray, path: Path, title: str = "",
                shift: np.ndarray | None = None) -> None:
    """Predicted vs true observables (all observables of all fresh samples).

    Parameters
    ----------
    c, pred : numpy.ndarray, shape (n, m)
    shift : numpy.ndarray, shape (m,), optional
        Target centre (DCR): both axes show ``c - shift``, the part the model has to learn
        (the raw DCR data are dominated by the source's own field, the same in every sample).
    """
    plt = _pyplot()
    if shift is not None:
        c, pred = c - shift, pred - shift
    t, p = c.ravel(), pred.ravel()
    if t.size > MAX_PARITY_POINTS:
        keep = np.random.default_rng(0).choice(t.size, MAX_PARITY_POINTS, replace=False)
        t, p = t[keep], p[keep]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(t, p, s=2, alpha=0.3, rasterized=True, edgecolors="none")
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8, label="prediction = truth")
    centred = " - training mean" if shift is not None else ""
    ax.set_xlabel(f"PDE solve{centred}")
    ax.set_ylabel(f"surrogate{centred}")
    ax.set_title(title or "parity, fresh samples")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_error_histogram(errors: dict[str, np.ndarray], path: Path, title: str = "") -> None:
    """Histograms of per-sample relative errors per data set (train/validation/test/fresh),
    overlaid, on logarithmic bins."""
    plt = _pyplot()
    values = [e[e > 0] for e in errors.values() if e.size]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if values:
        allv = np.concatenate(values)
        bins = np.geomspace(allv.min(), allv.max() * 1.0001, 40) if allv.size else 20
        for name, e in errors.items():
            if e.size:
                ax.hist(e[e > 0], bins=bins, density=True, histtype="step", linewidth=1.5,
                        label=f"{name} (n={e.size}, mean {e.mean():.3g})")
        ax.set_xscale("log")
        ax.legend()
    ax.set_xlabel("relative error ||c_pred - c|| / ||c - c_shift||")
    ax.set_ylabel("density")
    ax.set_title(title or "per-sample relative errors")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def write_figures(out: Path, *, problem: str, c: np.ndarray, pred: np.ndarray,
                  err: np.ndarray, split_errors: dict[str, np.ndarray],
                  coords: dict[str, np.ndarray], sample_ids: np.ndarray,
                  shift: np.ndarray | None = None) -> dict[str, str]:
    """All evaluation figures into ``out``.

    Parameters
    ----------
    c, pred : numpy.ndarray, shape (n, m)
        Fresh observables and predictions.
    err : numpy.ndarray, shape (n,)
        Per-sample relative errors of the fresh samples.
    split_errors : dict
        Per-sample errors of the training data's splits (may be empty).
    coords : dict
        Observable coordinates of the fresh file, each (m,).
    sample_ids : numpy.ndarray, shape (n,)
        Indices of the samples in the fresh file.
    shift : numpy.ndarray, shape (m,), optional
        Target centre of the model (DCR), used by the receiver images.

    Returns
    -------
    dict
        Figure name -> file name relative to ``out``.
    """
    figures = {}
    k = min(N_COLUMNS, len(c))
    plot_observable_columns(c[:k], pred[:k], sample_ids[:k], out / "observables.png",
                            title=f"{problem}: fresh samples (GNvpro fig. 3 style)")
    figures["observables"] = "observables.png"
    if {"receiver_x1", "receiver_x2", "direction"} <= set(coords):
        k = min(N_DCR_SAMPLES, len(c))
        plot_dcr_images(c[:k], pred[:k], coords, sample_ids[:k], out / "dcr_receivers.png",
                        shift=shift)
        figures["dcr_receivers"] = "dcr_receivers.png"
    plot_parity(c, pred, out / "parity.png", title=f"{problem}: parity, {len(c)} fresh samples",
                shift=shift)
    figures["parity"] = "parity.png"
    plot_error_histogram({**split_errors, "fresh": err}, out / "error_histogram.png",
                         title=f"{problem}: per-sample relative errors")
    figures["error_histogram"] = "error_histogram.png"
    return figures
