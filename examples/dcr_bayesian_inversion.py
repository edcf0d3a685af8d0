"""Bayesian inversion of the DC-resistivity parameters with a surrogate and with the PDE.

Infers y = (depth, size, angle) of the conductive body (SPEC 2) from noisy synthetic
observables of a fresh PDE solve (a y that is not in the training data):

1. surrogate and PDE: by default the script makes its own coarse-mesh problem so that PDE
   MCMC fits into minutes: ``generate-dataset`` on a 24 x 24 x 12 mesh (``--samples`` samples)
   and a short GNvpro training (``train-surrogate``). ``--data FILE.h5`` trains on an existing
   dataset instead, ``--model DIR`` uses a trained surrogate; the PDE is always rebuilt from the
   same recorded solver settings (:class:`surrogate.serving.PDEModel`). (A surrogate trained on
   /work/data/dcr10000.h5 uses the 48 x 48 x 24 SPEC mesh, 0.1 s a solve: then lower the PDE
   budgets.)
2. data d = G_pde(y_true) + sigma eps, with sigma = ``--noise`` x the rms of the centred
   training observables; Gaussian likelihood, uniform prior on the surrogate's training box
   (:class:`surrogate.serving.GaussianPosterior`).
3. Laplace (Gauss-Newton) approximation: MAP by bounded Gauss-Newton least squares
   (scipy ``least_squares``, several starts) on the surrogate, covariance (J^T J / sigma^2)^-1
   from the surrogate's autograd Jacobian at the MAP.
4. emcee (affine-invariant ensemble) on the surrogate posterior and on the PDE posterior with
   the same walkers, steps, start (a ball around the MAP) and random seed; posterior means and
   standard deviations compared, wall times compared.
5. Multi-fidelity delayed-acceptance Metropolis (Christen & Fox 2005): a random-walk proposal
   (covariance 2.38^2/d x the Laplace covariance) is first screened with the surrogate
   posterior and only if it passes is the PDE solved for the second-stage test, which
   corrects for the surrogate so the chain samples the exact PDE posterior. Compared with
   plain PDE random-walk Metropolis of the same length, seed and proposal: PDE solves per
   effective sample (ESS from emcee's integrated autocorrelation time).
6. ``corner`` plot: PDE and surrogate emcee samples, delayed-acceptance samples, Laplace
   ellipses (1 and 2 sigma), true parameters; ``results.json`` with every figure.

Every argument is checked before any work (walkers, steps, the true parameters, the model's
problem, the data file's problem): a bad one is a one-line error (exit status 2). A model
trained by an earlier run into ``OUT/model`` is reused only if it was trained by the same
run (train-surrogate's run fingerprint: method, configuration, seed, data); with other
settings the training refuses to replace it and says so. MPI (for the PDE) starts through
:func:`solvers.common.mpi_network.init_mpi`, on loopback.

Run ``python examples/dcr_bayesian_inversion.py --out demo-output/dcr-inversion``: 1 min 42 s
of CPU time for a first run (data, training, all samplers), 54 s when the data and model are
reused (wall time on an idle 2-core machine is about the same; on a shared, overloaded one it
was 8-10 minutes). ``--tiny`` is the test-suite configuration.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

PROG = "dcr_bayesian_inversion"

DEFAULTS = {"samples": 500, "n_cells": "24,24,12", "work_units": 100, "walkers": 12,
            "steps": 400, "burn": 150, "da_steps": 1500, "noise": 0.05}
TINY = {"samples": 60, "n_cells": "12,12,6", "work_units": 15, "walkers": 8, "steps": 40,
        "burn": 10, "da_steps": 60, "noise": 0.1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo-output/dcr-inversion", help="output folder")
    p.add_argument("--model", help="trained DCR surrogate directory (skips data + training)")
    p.add_argument("--data", help="DCR dataset (.h5 from generate-dataset) to train on")
    p.add_argument("--tiny", action="store_true", help="tiny configuration (tests, ~30 s)")
    p.add_argument("--samples", type=int, help="training samples to generate")
    p.add_argument("--n-cells", help="mesh of the generated dataset, e.g. 24,24,12")
    p.add_argument("--work-units", type=int, help="GNvpro work units per level")
    p.add_argument("--walkers", type=int, help="emcee walkers")
    p.add_argument("--steps", type=int, help="emcee steps (both fidelities)")
    p.add_argument("--burn", type=int, help="emcee steps discarded")
    p.add_argument("--da-steps", type=int, help="Metropolis steps (plain PDE and DA)")
    p.add_argument("--noise", type=float, help="noise sigma / rms of centred observables")
    p.add_argument("--true", default="0.42,0.22,1.1", help="true (depth, size, angle)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    preset = TINY if args.tiny else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for message in check_args(args):
        p.error(message)
    return args


#: smallest values of the integer options (emcee needs at least 2 walkers per parameter)
MINIMUM = {"samples": 20, "work_units": 1, "walkers": 2 * 3, "steps": 2, "burn": 0,
           "da_steps": 10, "seed": 0}


def check_args(args: argparse.Namespace) -> list[str]:
    """What is wrong with the options (empty if nothing); ``args.true`` becomes a float
    vector (3,)."""
    from solvers.common.validation import check_vector

    errors = [f"--{key.replace('_', '-')} must be >= {low}, got {getattr(args, key)}"
              for key, low in MINIMUM.items() if getattr(args, key) < low]
    if args.burn >= args.steps:
        errors.append(f"--burn {args.burn} must be smaller than --steps {args.steps}")
    if not 0 < args.noise < float("inf"):
        errors.append(f"--noise must be a positive number, got {args.noise}")
    try:
        values = [float(v) for v in str(args.true).split(",")]
        args.true = check_vector(values, 3, "--true")
    except ValueError as exc:
        errors.append(f"--true {args.true!r}: {exc}; give depth,size,angle")
    if args.model and args.data:
        errors.append("--model and --data exclude each other (--data trains a new model)")
    return errors


def check_problem(what: str, problem: str, n_in: int) -> None:
    """Refuse a model or data file that is not of the DCR problem (3 parameters)."""
    if problem != "dcr" or n_in != 3:
        raise SystemExit(f"{PROG}: error: {what} is of the {problem} problem ({n_in} "
                         "parameters); this example inverts the DCR parameters (3)")


# ---------------------------------------------------------------------- models
def make_surrogate(args: argparse.Namespace, out: Path):
    """(surrogate, PDE model, centred rms of the training observables)."""
    import surrogate
    from surrogate.serving import PDEModel

    if args.model:
        try:
            sur = surrogate.load(args.model)
        except ValueError as exc:                      # SurrogateFormatError: unusable folder
            raise SystemExit(f"{PROG}: error: --model {args.model}: {exc}") from None
        check_problem(f"--model {args.model}", sur.problem, sur.n_in)
        try:
            pde = PDEModel.from_surrogate_metadata(sur.metadata)
        except ValueError as exc:
            raise SystemExit(f"{PROG}: error: --model {args.model}: {exc}") from None
    else:
        data = Path(args.data) if args.data else out / "dcr.h5"
        if args.data:
            check_data(data)
        out.mkdir(parents=True, exist_ok=True)
        if not args.data:
            cmd = [str(Path(sys.executable).parent / "generate-dataset"), "dcr", "--samples",
                   str(args.samples), "--seed", str(args.seed + 1), "--no-progress",
                   "--out", str(data), "--set", f"n_cells=[{args.n_cells}]"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{PROG}: generate-dataset failed:\n{proc.stderr}")
            print(proc.stdout.strip().splitlines()[-1])
        model_dir = out / "model"
        import train.cli

        toml = out / "train.toml"
        levels = "[2, 4]" if args.tiny else "[2, 4, 8]"
        width = 8 if args.tiny else 16
        toml.write_text(f"[model]\nwidth = {width}\nlevels = {levels}\n"
                        f"[gnvpro]\nwork_units_per_level = {args.work_units}\nr_max = 10\n")
        t0 = time.perf_counter()
        # --resume: a finished model of this very run (same configuration, seed and data:
        # train-surrogate's fingerprint) is reused; one trained with other settings is refused
        rc = train.cli.main(["--data", str(data), "--method", "gnvpro", "--config",
                             str(toml), "--out", str(model_dir), "--quiet",
                             "--seed", str(args.seed), "--resume"])
        if rc != 0:
            raise SystemExit(f"{PROG}: train-surrogate refused or failed (above); for other "
                             f"settings use another --out than {out}")
        print(f"surrogate ready in {time.perf_counter() - t0:.1f} s")
        sur = surrogate.load(model_dir)
        pde = PDEModel.from_dataset(data)
    shift = sur.torch_model.normalizer.c_shift.numpy()
    scale = float(sur.torch_model.normalizer.c_scale)      # rms of centred training targets
    return sur, pde, shift, scale


def check_data(path: Path) -> None:
    """Refuse a ``--data`` file that is missing, unreadable or not DCR data (before any
    training)."""
    from datasets import DatasetFileError, open_dataset

    try:
        ds = open_dataset(path)
    except (DatasetFileError, OSError, ValueError) as exc:
        raise SystemExit(f"{PROG}: error: --data {path}: {exc}") from None
    check_problem(f"--data {path}", str(ds.attrs.get("problem", "unknown")),
                  int(ds.sizes.get("parameter", 0)))


# ---------------------------------------------------------------------- inference pieces
class OffsetModel:
    """The surrogate plus a constant offset: G_s(y) + (G_pde(y0) - G_s(y0)) (same Jacobian)."""

    def __init__(self, model, offset: np.ndarray) -> None:
        self.model, self.offset = model, offset
        self.n_in, self.n_out = model.n_in, model.n_out

    def __call__(self, y):
        return self.model(y) + self.offset

    def jacobian(self, y):
        return self.model.jacobian(y)

    def value_and_jacobian(self, y):
        c, J = self.model.value_and_jacobian(y)
        return c + self.offset, J


def laplace(post, rng: np.random.Generator, n_starts: int = 6, start=None):
    """MAP by bounded least squares on the surrogate, Gauss-Newton covariance there."""
    from scipy.optimize import least_squares

    model, sig = post.model, post.sigma

    def res(y):
        return (model(y) - post.observed) / sig

    def jac(y):
        return model.jacobian(y) / sig

    best = None
    for i in range(n_starts):
        y0 = post.lower + (post.upper - post.lower) * (0.1 + 0.8 * rng.random(post.n_in))
        if start is not None and i == 0:
            y0 = np.asarray(start)
        r = least_squares(res, y0, jac=jac, bounds=(post.lower, post.upper), method="trf",
                          x_scale="jac")
        if best is None or r.cost < best.cost:
            best = r
    return best.x, post.gauss_newton_covariance(best.x)


def run_emcee(log_prob, p0: np.ndarray, steps: int, seed: int, vectorize: bool):
    import emcee

    sampler = emcee.EnsembleSampler(p0.shape[0], p0.shape[1], log_prob, vectorize=vectorize)
    sampler.random_state = np.random.RandomState(seed).get_state()
    t0, c0 = time.perf_counter(), time.process_time()
    sampler.run_mcmc(p0, steps, progress=False)
    sampler.cpu_seconds = time.process_time() - c0      # robust on a busy shared machine
    return sampler, time.perf_counter() - t0


def metropolis(post_fine, post_coarse, y0, cov, steps: int, seed: int,
               correct: bool = False):
    """Random-walk Metropolis on ``post_fine``; with ``post_coarse``, two-stage delayed
    acceptance (Christen & Fox 2005): stage 1 on the coarse posterior, stage 2 with the fine
    one, accepting with min(1, pi(y) a1(y, x) / (pi(x) a1(x, y))) so that the chain samples
    ``post_fine`` exactly whatever the coarse model's error.

    With ``correct``, the coarse model seen from the current state x is the surrogate shifted
    by its error there, G_s(.) + G_f(x) - G_s(x) (a state-dependent approximation, allowed by
    Christen & Fox; it removes the surrogate's local bias at no extra PDE solve).

    Returns
    -------
    chain : (steps, d); fine_evaluations : int; accepted : int
    """
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(cov * 2.38 ** 2 / len(y0))
    y = np.array(y0, dtype=np.float64)
    fine, obs, sig = post_fine.model, post_fine.observed, post_fine.sigma

    def loglik(c: np.ndarray) -> float:
        r = (c - obs) / sig
        return float(-0.5 * r @ r)

    cf = fine(y)
    lf = loglik(cf)
    cs = post_coarse.model(y) if post_coarse is not None else None
    n_fine, accepted = 1, 0
    chain = np.empty((steps, len(y)))
    for i in range(steps):
        prop = y + L @ rng.standard_normal(len(y))
        u1, u2 = rng.random(), rng.random()
        if not post_fine.inside(prop[None])[0]:
            chain[i] = y
            continue
        if post_coarse is None:
            cf_prop = fine(prop)
            lf_prop = loglik(cf_prop)
            n_fine += 1
            if np.log(u1) < lf_prop - lf:
                y, cf, lf = prop, cf_prop, lf_prop
                accepted += 1
            chain[i] = y
            continue
        cs_prop = post_coarse.model(prop)
        shift_x = (cf - cs) if correct else 0.0
        lc_x_prop, lc_x_x = loglik(cs_prop + shift_x), loglik(cs + shift_x)
        log_a1_xy = min(0.0, lc_x_prop - lc_x_x)
        if np.log(u1) < log_a1_xy:                                   # stage 1: surrogate
            cf_prop = fine(prop)
            lf_prop = loglik(cf_prop)
            n_fine += 1
            shift_y = (cf_prop - cs_prop) if correct else 0.0
            log_a1_yx = min(0.0, loglik(cs + shift_y) - loglik(cs_prop + shift_y))
            if np.log(u2) < (lf_prop - lf) + log_a1_yx - log_a1_xy:  # stage 2: PDE decides
                y, cf, lf, cs = prop, cf_prop, lf_prop, cs_prop
                accepted += 1
        chain[i] = y
    return chain, n_fine, accepted


def ess(chain: np.ndarray) -> float:
    """Effective sample size of a single chain (steps, d): steps / max integrated time."""
    import emcee

    tau = emcee.autocorr.integrated_time(chain[:, None, :], tol=0, quiet=True)
    return float(chain.shape[0] / np.max(tau))


# ---------------------------------------------------------------------- plot
def plot(out: Path, names, truth, sets, laplace_mean, laplace_cov) -> Path:
    import corner
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    d = len(truth)
    lo = np.min([s.min(axis=0) for _, s, _ in sets], axis=0)
    hi = np.max([s.max(axis=0) for _, s, _ in sets], axis=0)
    pad = 0.1 * (hi - lo)
    ranges = [(lo[k] - pad[k], hi[k] + pad[k]) for k in range(d)]
    fig = None
    for _, samples, color in sets:
        fig = corner.corner(samples, fig=fig, labels=names, color=color, range=ranges,
                            bins=30, smooth=1.0, plot_datapoints=False, plot_density=False,
                            levels=(0.39, 0.86), hist_kwargs={"density": True},
                            truths=truth, truth_color="k")
    axes = np.array(fig.axes).reshape(d, d)
    for i in range(d):
        s = np.sqrt(laplace_cov[i, i])
        x = np.linspace(*ranges[i], 200)
        axes[i, i].plot(x, np.exp(-0.5 * ((x - laplace_mean[i]) / s) ** 2)
                        / (s * np.sqrt(2 * np.pi)), color="C3", lw=1.2)
        for j in range(i):
            C = laplace_cov[np.ix_([j, i], [j, i])]
            vals, vecs = np.linalg.eigh(C)
            angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
            for k in (1.0, 2.0):
                axes[i, j].add_patch(Ellipse((laplace_mean[j], laplace_mean[i]),
                                             2 * k * np.sqrt(vals[1]), 2 * k * np.sqrt(vals[0]),
                                             angle=angle, fill=False, color="C3", lw=1.0))
    handles = [Line2D([], [], color=c, label=label) for label, _, c in sets]
    handles.append(Line2D([], [], color="C3", label="Laplace (surrogate GN at MAP)"))
    handles.append(Line2D([], [], color="k", label="true parameters"))
    fig.legend(handles=handles, loc="upper right", frameon=False)
    path = out / "posterior.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    from surrogate.serving import GaussianPosterior

    out = Path(args.out)
    sur, pde, _, scale = make_surrogate(args, out)    # checks --model/--data before writing
    out.mkdir(parents=True, exist_ok=True)
    truth = np.asarray(args.true, dtype=np.float64)
    lower, upper = sur.lower, sur.upper
    if lower is None or upper is None:
        raise SystemExit(f"{PROG}: error: the model records no training box (train it again)")
    if not np.all((truth > lower) & (truth < upper)):
        raise SystemExit(f"{PROG}: error: --true {truth.tolist()} is outside the training box "
                         f"{lower.tolist()} - {upper.tolist()}")
    rng = np.random.default_rng(args.seed)
    sigma = args.noise * scale
    c_true = pde(truth)                                          # fresh PDE solve
    observed = c_true + sigma * rng.standard_normal(c_true.size)
    post_s = GaussianPosterior(sur, observed, sigma, lower, upper)
    post_p = GaussianPosterior(pde, observed, sigma, lower, upper)

    t0 = time.perf_counter()
    y_map, cov = laplace(post_s, rng)
    t_laplace = time.perf_counter() - t0
    std_l = np.sqrt(np.diag(cov))
    p0 = y_map + 0.5 * std_l * rng.standard_normal((args.walkers, 3))
    p0 = np.clip(p0, lower + 1e-9, upper - 1e-9)

    s_sur, t_sur = run_emcee(post_s.log_prob, p0, args.steps, args.seed, vectorize=True)
    solves0 = pde.n_solves
    s_pde, t_pde = run_emcee(post_p.log_prob, p0, args.steps, args.seed, vectorize=False)
    pde_solves_emcee = pde.n_solves - solves0
    x_sur = s_sur.get_chain(discard=args.burn, flat=True)
    x_pde = s_pde.get_chain(discard=args.burn, flat=True)
    mean_s, mean_p = x_sur.mean(axis=0), x_pde.mean(axis=0)
    std_s, std_p = x_sur.std(axis=0), x_pde.std(axis=0)

    # offset-corrected surrogate: G_s + (G_pde - G_s) at the MAP, MAP re-found, 3 PDE solves
    y_c = y_map
    for _ in range(3):
        post_c = GaussianPosterior(OffsetModel(sur, pde(y_c) - sur(y_c)), observed, sigma,
                                   lower, upper)
        y_c, _ = laplace(post_c, rng, n_starts=1, start=y_c)
    s_cor, t_cor = run_emcee(post_c.log_prob, p0, args.steps, args.seed, vectorize=True)
    x_cor = s_cor.get_chain(discard=args.burn, flat=True)
    mean_c, std_c = x_cor.mean(axis=0), x_cor.std(axis=0)

    t0 = time.perf_counter()
    chain_plain, n_plain, acc_plain = metropolis(post_p, None, y_map, cov, args.da_steps,
                                                 args.seed + 7)
    t_plain = time.perf_counter() - t0
    burn_da = args.da_steps // 5
    da = {}
    for key, correct in (("da", False), ("da_corrected", True)):
        t0 = time.perf_counter()
        chain, n, acc = metropolis(post_p, post_s, y_map, cov, args.da_steps, args.seed + 7,
                                   correct=correct)
        e_ = ess(chain[burn_da:])
        da[key] = {"pde_solves": n, "accepted": acc, "ess": e_, "pde_solves_per_ess": n / e_,
                   "seconds": time.perf_counter() - t0,
                   "mean": chain[burn_da:].mean(axis=0).tolist(),
                   "std": chain[burn_da:].std(axis=0).tolist()}
        if correct:
            chain_da = chain
    ess_plain = ess(chain_plain[burn_da:])

    names = list(sur.input_names)
    figure = plot(out, names, truth, [
        ("PDE emcee", x_pde, "k"), ("surrogate emcee", x_sur, "C0"),
        ("surrogate + offset (3 PDE solves) emcee", x_cor, "C1"),
        ("delayed acceptance, corrected (PDE-exact)", chain_da[burn_da:], "C2")], y_map, cov)
    results = {
        "truth": truth.tolist(), "sigma": sigma, "noise_relative": args.noise,
        "mesh": pde.solver.settings()["n_cells"], "training_box": [lower.tolist(),
                                                                   upper.tolist()],
        "map": y_map.tolist(), "laplace_std": std_l.tolist(), "laplace_seconds": t_laplace,
        "emcee": {"walkers": args.walkers, "steps": args.steps, "burn": args.burn,
                  "seed": args.seed,
                  "surrogate": {"mean": mean_s.tolist(), "std": std_s.tolist(),
                                "seconds": t_sur,
                                "acceptance": float(np.mean(s_sur.acceptance_fraction))},
                  "pde": {"mean": mean_p.tolist(), "std": std_p.tolist(), "seconds": t_pde,
                          "solves": pde_solves_emcee,
                          "acceptance": float(np.mean(s_pde.acceptance_fraction))},
                  "surrogate_offset_corrected": {
                      "mean": mean_c.tolist(), "std": std_c.tolist(), "seconds": t_cor,
                      "pde_solves": 3,
                      "mean_difference_in_pde_std": ((mean_c - mean_p) / std_p).tolist(),
                      "std_ratio_over_pde": (std_c / std_p).tolist()},
                  "mean_difference_in_pde_std": ((mean_s - mean_p) / std_p).tolist(),
                  "std_ratio_surrogate_over_pde": (std_s / std_p).tolist(),
                  "laplace_mean_difference_in_pde_std": ((y_map - mean_p) / std_p).tolist(),
                  "laplace_std_ratio_over_pde": (std_l / std_p).tolist(),
                  "wall_time_ratio_pde_over_surrogate": t_pde / t_sur,
                  "cpu_seconds": {"pde": s_pde.cpu_seconds, "surrogate": s_sur.cpu_seconds},
                  "cpu_time_ratio_pde_over_surrogate": s_pde.cpu_seconds / s_sur.cpu_seconds},
        "delayed_acceptance": {
            "steps": args.da_steps, "burn": burn_da,
            "plain": {"pde_solves": n_plain, "accepted": acc_plain, "ess": ess_plain,
                      "pde_solves_per_ess": n_plain / ess_plain, "seconds": t_plain,
                      "mean": chain_plain[burn_da:].mean(axis=0).tolist(),
                      "std": chain_plain[burn_da:].std(axis=0).tolist()},
            **da,
            "solves_per_ess_ratio_plain_over_da": (n_plain / ess_plain)
            / da["da"]["pde_solves_per_ess"],
            "solves_per_ess_ratio_plain_over_da_corrected": (n_plain / ess_plain)
            / da["da_corrected"]["pde_solves_per_ess"]},
        "figure": figure.name,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results, names)
    return results


def report(r: dict, names: list[str]) -> None:
    e, da = r["emcee"], r["delayed_acceptance"]
    print(f"truth {np.round(r['truth'], 4).tolist()}, sigma {r['sigma']:.3g} "
          f"({r['noise_relative']:g} x rms), mesh {r['mesh']}")
    print(f"{'parameter':<10} {'PDE mean':>10} {'PDE std':>9} {'sur mean':>10} {'sur std':>9}"
          f" {'Δmean/σ':>8} {'σ ratio':>8} {'MAP':>9} {'Laplace σ':>9}")
    for k, name in enumerate(names):
        print(f"{name:<10} {e['pde']['mean'][k]:>10.4f} {e['pde']['std'][k]:>9.4f} "
              f"{e['surrogate']['mean'][k]:>10.4f} {e['surrogate']['std'][k]:>9.4f} "
              f"{e['mean_difference_in_pde_std'][k]:>8.2f} "
              f"{e['std_ratio_surrogate_over_pde'][k]:>8.2f} {r['map'][k]:>9.4f} "
              f"{r['laplace_std'][k]:>9.4f}")
    c = e["surrogate_offset_corrected"]
    print("surrogate + offset from 3 PDE solves: Δmean/σ "
          + ", ".join(f"{v:.2f}" for v in c["mean_difference_in_pde_std"]) + "; σ ratio "
          + ", ".join(f"{v:.2f}" for v in c["std_ratio_over_pde"]))
    print(f"emcee wall time: PDE {e['pde']['seconds']:.1f} s ({e['pde']['solves']} solves), "
          f"surrogate {e['surrogate']['seconds']:.2f} s: "
          f"{e['wall_time_ratio_pde_over_surrogate']:.0f}x (CPU time "
          f"{e['cpu_seconds']['pde']:.1f} s vs {e['cpu_seconds']['surrogate']:.2f} s: "
          f"{e['cpu_time_ratio_pde_over_surrogate']:.0f}x)")
    for key, label in (("plain", "plain PDE Metropolis"), ("da", "delayed acceptance"),
                       ("da_corrected", "DA, error-corrected")):
        x = da[key]
        print(f"{label:<22} {x['pde_solves']:>6} PDE solves, ESS {x['ess']:7.1f}, "
              f"{x['pde_solves_per_ess']:6.1f} solves per effective sample, "
              f"{x['seconds']:.1f} s")
    print(f"PDE solves per effective sample, plain / DA: "
          f"{da['solves_per_ess_ratio_plain_over_da']:.2f}x, plain / corrected DA: "
          f"{da['solves_per_ess_ratio_plain_over_da_corrected']:.2f}x; figure {r['figure']}")


def main(argv: list[str] | None = None) -> int:
    from solvers.errors import InputError, VarproError
    from surrogate import OutOfBoxWarning

    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfBoxWarning)   # the prior box is the training box
        try:
            run(args)
        except VarproError as exc:        # MPI cannot start, a failed solve, a bad file, ...
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, InputError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
