"""The MPI run of ``refine-surrogate``: solves on every rank, everything else on rank 0.

Layout of ``DIR``::

    state.json            finished rounds, stop reason (resume; see :mod:`.state`)
    check.h5              the fixed fresh check set (generate-dataset engine)
    rounds/NNN/batch.h5   round NNN's solves (engine, explicit parameters, resumable)
    rounds/NNN/selection.npz   candidates, scores, selected indices
    rounds/NNN/data.h5    the growing dataset after round NNN (:mod:`.data`)
    rounds/NNN/model/     the ensemble after round NNN (train-surrogate --ensemble layout)
    data.h5, model        the latest dataset (hard link) and a file naming the latest model
    refine.png            check-set error against PDE solves
    summary.json/.txt     one row per round

A round is recorded in ``state.json`` only when its model is evaluated, so a run killed at
any moment (``kill -9`` included) restarts the round it was in: the selection is recomputed
from the previous round's saved model (deterministic on CPU with a fixed torch thread count),
the batch file resumes (the engine refuses other parameters), the data file is reused once
written, finished members of the round's ensemble are kept and an interrupted one continues
from its checkpoint. The result equals that of an uninterrupted run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from solvers.common.atomic import sha256_file, write_bytes_atomic, write_text_atomic
from solvers.common.rank_zero import on_rank_zero
from surrogate.metadata import METADATA_FILE
from surrogate.refinement.options import RefineOptions
from surrogate.refinement.plan import RefinePlan, make_plan
from surrogate.refinement.state import open_state

CHECK_FILE = "check.h5"
ROUNDS_DIR = "rounds"
FIGURE = "refine.png"


def round_dir(out: Path, r: int) -> Path:
    return out / ROUNDS_DIR / f"{r:03d}"


def refine(options: RefineOptions, comm: Any = None) -> dict | None:
    """Run (or continue) a refinement; collective over ``comm`` (default COMM_WORLD).

    Returns
    -------
    dict or None
        The summary (``summary.json``) on rank 0, None elsewhere.

    Raises
    ------
    solvers.errors.UsageError, datasets.ConfigMismatchError, ...
        Bad input (:class:`~solvers.errors.InputError`), raised on every rank alike.
    """
    import dolfinx_solver  # noqa: F401  (orders MPI ahead of petsc4py / dolfinx)
    from mpi4py import MPI

    world = comm if comm is not None else MPI.COMM_WORLD
    options.check(world.size)
    plan = on_rank_zero(world, lambda: make_plan(options))
    on_rank_zero(world, lambda: open_state(options.out, plan.fingerprint))
    _solve(options, plan, world, options.out / CHECK_FILE, options.check_samples,
           plan.check_seed, None)
    runner = _Runner(options, plan) if world.rank == 0 else None
    on_rank_zero(world, lambda: cast(_Runner, runner).start(), idle=True)
    while True:
        todo = on_rank_zero(world, lambda: cast(_Runner, runner).next_batch())
        if todo is None:
            break
        r, params = todo
        _solve(options, plan, world, round_dir(options.out, r) / "batch.h5", len(params),
               plan.data_seed, params)
        on_rank_zero(world, functools.partial(_finish_round, runner, r), idle=True)
    summary = on_rank_zero(world, lambda: cast(_Runner, runner).finish(), idle=True)
    return summary if world.rank == 0 else None


def _finish_round(runner: _Runner | None, r: int) -> None:
    cast(_Runner, runner).finish_round(r)


def _solve(options: RefineOptions, plan: RefinePlan, world: Any, path: Path, samples: int,
           seed: int, params: np.ndarray | None) -> None:
    """Solve into ``path`` with the generate-dataset engine (collective; resumes)."""
    from datasets.generate import GenerationOptions, generate

    generate(GenerationOptions(
        problem=plan.problem, out=path, samples=samples, seed=seed, settings=plan.settings,
        ranks_per_sample=options.ranks_per_sample,
        checkpoint_interval=options.checkpoint_interval, progress=options.progress,
        parameters=params), comm=world)


class _Runner:
    """Rank 0's side of the loop: selection, data, training, check, state."""

    def __init__(self, options: RefineOptions, plan: RefinePlan) -> None:
        import torch

        torch.set_num_threads(options.threads)
        self.options, self.plan, self.out = options, plan, options.out
        self.state = open_state(options.out, plan.fingerprint)
        self._solver: Any = None
        self._check: tuple[np.ndarray, np.ndarray] | None = None
        self.log = sys.stdout if options.progress else None

    # ------------------------------------------------------------------ pieces
    def solver(self) -> Any:
        """The problem's solver on COMM_SELF (draws the candidates)."""
        if self._solver is None:
            from mpi4py import MPI

            from solvers import make_solver

            self._solver = make_solver(self.plan.problem, MPI.COMM_SELF, **self.plan.settings)
        return self._solver

    def check_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Parameters (n, p) and observables (n, m) of the solved check samples."""
        if self._check is None:
            from datasets import open_dataset

            ds = open_dataset(self.out / CHECK_FILE)
            self._check = (np.asarray(ds["y"].values, dtype=np.float64),
                           np.asarray(ds["c"].values, dtype=np.float64))
        return self._check

    def model_path(self, r: int) -> Path:
        return Path(self.options.model_dir) if r == 0 else round_dir(self.out, r) / "model"

    def load(self, r: int) -> Any:
        from surrogate.uq_model import load

        return load(self.model_path(r))

    def say(self, text: str) -> None:
        if self.log is not None:
            print(f"refine-surrogate: {text}", file=self.log, flush=True)

    def evaluate(self, model: Any) -> dict[str, Any]:
        """Error and calibration of ``model`` on the check set."""
        import warnings

        from surrogate.metrics import error_stats, relative_errors
        from surrogate.uncertainty import calibration_summary
        from surrogate.uq_model import OutOfBoxWarning

        y, c = self.check_data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OutOfBoxWarning)
            mean, std = model.predict(y, return_std=True)
        norm = model.torch_model.normalizer
        shift = norm.c_shift.cpu().numpy() if norm.center_targets else None
        err = relative_errors(mean, c, shift)
        cal = calibration_summary(mean, std, c, shift)
        return {"error": float(err.mean()), "error_stats": error_stats(err),
                "check": {k: cal[k] for k in ("coverage_1sigma", "coverage_2sigma", "spearman",
                                              "mean_predicted_error")}}

    # ------------------------------------------------------------------ steps
    def start(self) -> None:
        """Round 0: the starting model on the check set (once)."""
        if self.state.rounds:
            self.say(f"resuming {self.out} after round {len(self.state.rounds) - 1} "
                     f"({self.state.n_added} solves added)")
            return
        from datasets.split_data import load_split_data

        base = load_split_data(self.plan.base_data)
        n_train, n_val = base.y["train"].shape[0], base.y["validation"].shape[0]
        t0, c0 = time.perf_counter(), time.process_time()
        record = {"round": 0, "model": str(self.model_path(0)), "n_added_round": 0,
                  "n_added": 0, "n_train": n_train, "n_solves": n_train + n_val,
                  **self.evaluate(self.load(0)),
                  "seconds": {"check": time.perf_counter() - t0},
                  "cpu_seconds": {"check": time.process_time() - c0},
                  "model_sha256": sha256_file(self.model_path(0) / METADATA_FILE)}
        self._record(record)

    def next_batch(self) -> tuple[int, np.ndarray] | None:
        """(round, parameters to solve) of the next round, or None when the run stops."""
        last, opts = self.state.rounds[-1], self.options
        reason = "target" if last["error"] <= opts.target else \
            "budget" if self.state.n_added >= opts.max_solves else None
        if reason is not None:
            self.say("target reached" if reason == "target" else
                     f"solve budget spent ({self.state.n_added} of {opts.max_solves})")
            if self.state.stop_reason != reason:
                self.state.stop_reason = reason
                self.state.save(self.out)
            return None
        r = len(self.state.rounds)
        size = min(opts.batch, opts.max_solves - self.state.n_added)
        t0 = time.perf_counter()
        from surrogate.refinement.selection import draw_candidates, score, select

        cands = draw_candidates(self.solver(), self.plan.candidate_seed, r, opts.n_candidates)
        scores = score(self.load(r - 1), cands)
        chosen = select(opts.strategy, scores, size)
        params = np.ascontiguousarray(cands[chosen])
        folder = round_dir(self.out, r)
        folder.mkdir(parents=True, exist_ok=True)
        _save_npz(folder / "selection.npz", candidates=cands, scores=scores, selected=chosen)
        self._select_seconds = time.perf_counter() - t0
        self.say(f"round {r}: {opts.strategy} selection of {size} of {len(cands)} candidates "
                 f"(predicted error of the selected {scores[chosen].mean():.4g}, of all "
                 f"{scores.mean():.4g}); solving")
        self._round_start = time.perf_counter()
        self._selection = {"n_candidates": int(len(cands)),
                           "predicted_error_selected": float(scores[chosen].mean()),
                           "predicted_error_candidates": float(scores.mean()),
                           "parameters_sha256": hashlib.sha256(params.tobytes()).hexdigest()}
        return r, params

    def finish_round(self, r: int) -> None:
        """Grow the data, retrain the ensemble, check it, record the round."""
        from datasets.split_data import load_split_data
        from surrogate.refinement.data import link_latest, merge
        from train.ensemble import train_ensemble

        folder = round_dir(self.out, r)
        solve_seconds = time.perf_counter() - getattr(self, "_round_start", time.perf_counter())
        data_path = folder / "data.h5"
        if not data_path.exists():           # written atomically: complete when present
            merge(self.plan.base_data, [round_dir(self.out, k) / "batch.h5"
                                        for k in range(1, r + 1)], data_path)
        data = load_split_data(data_path)
        t0, c0 = time.perf_counter(), time.process_time()
        init = [m.torch_model for m in self.load(r - 1).members] \
            if self.options.warm_start else None
        model_dir = folder / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        import torch

        train_ensemble(self.plan.method, self.plan.config, data, device=torch.device("cpu"),
                       seed=self.plan.seed, size=self.plan.size, out=model_dir, resume=True,
                       init=init)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        result = self.evaluate(self.load(r))
        n_added = self.state.n_added + len(np.load(folder / "selection.npz")["selected"])
        record = {"round": r, "model": str(model_dir), "n_added_round":
                  n_added - self.state.n_added, "n_added": n_added,
                  "n_train": int(data.y["train"].shape[0]),
                  "n_solves": int(self.state.rounds[0]["n_solves"]) + n_added,
                  **result, "selection": getattr(self, "_selection", None),
                  "seconds": {"select": getattr(self, "_select_seconds", None),
                              "solve": solve_seconds, "train": train_s,
                              "check": time.perf_counter() - t1},
                  "cpu_seconds": {"train": train_cpu},
                  "model_sha256": sha256_file(model_dir / METADATA_FILE)}
        self._record(record)
        link_latest(data_path, self.out / "data.h5")
        write_text_atomic(self.out / "model", str(model_dir) + "\n")

    def _record(self, record: dict[str, Any]) -> None:
        self.state.rounds.append(record)
        self.state.save(self.out)
        self.say(f"round {record['round']}: {record['n_solves']} solves "
                 f"(+{record['n_added']}), check-set error {record['error']:.4g} "
                 f"(median {record['error_stats']['median']:.4g}), 2-sigma coverage "
                 f"{record['check']['coverage_2sigma']:.3f}")

    def finish(self) -> dict[str, Any]:
        """Figure and summary of the run (every call rewrites them)."""
        from surrogate.refinement.plots import plot_error_vs_solves

        opts, rounds = self.options, self.state.rounds
        plot_error_vs_solves({opts.strategy: rounds}, self.out / FIGURE, target=opts.target,
                             title=f"{self.plan.problem}: refine-surrogate ({opts.strategy}, "
                             f"batch {opts.batch})")
        summary = {"problem": self.plan.problem, "strategy": opts.strategy,
                   "target": opts.target, "max_solves": opts.max_solves, "batch": opts.batch,
                   "stop_reason": self.state.stop_reason, "rounds": rounds,
                   "final_error": rounds[-1]["error"], "n_added": self.state.n_added,
                   "n_solves": rounds[-1]["n_solves"], "model": rounds[-1]["model"],
                   "figure": FIGURE}
        write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_text_atomic(self.out / "summary.txt", summary_table(summary))
        return summary


def summary_table(summary: dict[str, Any]) -> str:
    """One row per round: solves, check-set error, coverage."""
    lines = [f"refine-surrogate ({summary['problem']}, {summary['strategy']}, batch "
             f"{summary['batch']}, target {summary['target']:g}, budget "
             f"{summary['max_solves']}): stopped by {summary['stop_reason'] or '-'}",
             f"{'round':>5} {'solves':>7} {'added':>6} {'mean error':>11} {'median':>9} "
             f"{'2σ cover':>9} {'train s':>8}"]
    for r in summary["rounds"]:
        train_s = (r.get("seconds") or {}).get("train")
        lines.append(f"{r['round']:>5} {r['n_solves']:>7} {r['n_added']:>6} "
                     f"{r['error']:>11.4g} {r['error_stats']['median']:>9.4g} "
                     f"{r['check']['coverage_2sigma']:>9.3f} "
                     f"{'-' if train_s is None else f'{train_s:.1f}':>8}")
    return "\n".join(lines) + "\n"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    write_bytes_atomic(path, buf.getvalue())
