"""``--time-budget SECONDS`` (issue 18): the widest network GNvpro can train well in a given
wall time, and the seconds each level gets.

The plan (:func:`plan_time_budget`):

1. Candidate widths (:func:`candidate_widths`): :data:`WIDTHS` between the width of the same
   run without a budget (the preset's or the data-driven default: never narrower) and the
   data width of the independent target values (:func:`train.auto.data_width` with the
   number of principal directions of the targets above :data:`train.auto.SPECTRUM_TOL`: no
   more weights than that many values per sample, against over-fitting), that pass the
   memory estimate.
2. The seconds per work unit of each candidate are measured on the training data at the
   first and the last level (a few work units of the real problem: forward pass, inner
   solve, gradient, Gauss-Newton products), widest first.
3. The first (widest) candidate that can spend at least :data:`WU_PER_WIDTH` work units per
   unit of width in the time left is taken (measured on DCR 10,000, docs/peers.md: at equal
   time, width 48 with 1600 work units beats width 32 with 2400); the narrowest candidate
   when none can.
4. The time left after the probes and a reserve for the closing work (:data:`RESERVE`: the
   final float64 solve, the summary) is split over the levels by :data:`LEVEL_SHARES`;
   a level stops by its deadline (:func:`train.trust_region.minimize_trust_region`) and
   time it leaves unused goes to the next level.

The plan depends on the speed of the machine at the moment, so a time-budgeted run is not
bitwise reproducible (its ``summary.json`` records the plan).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from datasets.split_data import SplitData
from solvers.common.atomic import write_text_atomic
from train.auto import SPECTRUM_TOL, data_width, spectrum_width
from train.checkpoint import CHECKPOINT_DIR, has_checkpoint
from train.errors import MemoryEstimateError
from train.factories import build_model, training_config
from train.gnvpro import GNvpro
from train.resources import check_memory
from train.varpro import VarProProblem, WorkCounter

#: candidate widths, narrowest first
WIDTHS = (8, 12, 16, 24, 32, 40, 48, 64, 80, 96)
#: work units per unit of width a candidate must be able to afford
WU_PER_WIDTH = 30.0
#: fraction of the budget kept for the closing work (final solve, summary)
RESERVE = 0.05
#: fraction of the budget the probes may use before the best width found so far is taken
PROBE_SHARE = 0.1
#: shares of the training time of the levels (coarse to fine), the default preset's split
#: of wall time on DCR (first level about 30 %, the finest about 40 %)
LEVEL_SHARES = (0.3, 0.3, 0.4)


@dataclass
class TimePlan:
    """What :func:`plan_time_budget` chose (``summary.json`` ``"time_budget"``).

    Attributes
    ----------
    seconds : float
        The budget.
    width : int
    level_seconds : list of float
        Wall seconds of each level.
    probe_seconds : float
        Spent measuring the candidates.
    widths : list of int
        The candidates.
    seconds_per_wu : dict
        width -> [seconds per work unit at the first level, at the last level].
    affordable_wu : dict
        width -> work units the candidate could spend.
    """

    seconds: float
    width: int
    level_seconds: list[float]
    probe_seconds: float
    widths: list[int]
    seconds_per_wu: dict[int, list[float]] = field(default_factory=dict)
    affordable_wu: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds_per_wu"] = {str(k): v for k, v in self.seconds_per_wu.items()}
        d["affordable_wu"] = {str(k): v for k, v in self.affordable_wu.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimePlan:
        return cls(seconds=float(d["seconds"]), width=int(d["width"]),
                   level_seconds=[float(s) for s in d["level_seconds"]],
                   probe_seconds=float(d["probe_seconds"]), widths=[int(w) for w in d["widths"]],
                   seconds_per_wu={int(k): v for k, v in d["seconds_per_wu"].items()},
                   affordable_wu={int(k): float(v) for k, v in d["affordable_wu"].items()})


#: the plan of an interrupted time-budgeted run, next to its checkpoint (removed with it)
PLAN_FILE = "time_plan.json"


def time_plan(cfg: dict, data: SplitData, *, seed: int, device: torch.device, out: Path,
              resume: bool, stream: TextIO | None = None) -> TimePlan:
    """The plan of a run with ``[gnvpro] time_budget`` > 0: the stored one when resuming an
    interrupted run (so it keeps its width), else a new one (:func:`plan_time_budget`),
    stored in ``out/checkpoint/time_plan.json`` until the run finishes."""
    path = Path(out) / CHECKPOINT_DIR / PLAN_FILE
    if resume and has_checkpoint(out) and path.is_file():
        try:
            return TimePlan.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass                                      # damaged: plan again
    plan = plan_time_budget(cfg, data, cfg["gnvpro"]["time_budget"], seed=seed, device=device,
                            stream=stream)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(plan.as_dict()) + "\n")
    return plan


def level_shares(n_levels: int) -> list[float]:
    """:data:`LEVEL_SHARES` for 3 levels, else equal shares."""
    if n_levels == len(LEVEL_SHARES):
        return list(LEVEL_SHARES)
    return [1.0 / n_levels] * n_levels


def probe_rate(cfg: dict, data: SplitData, width: int, n_steps: int, seed: int,
               device: torch.device) -> float:
    """Seconds per work unit of GNvpro at ``width`` and ``n_steps`` on the training data.

    Times one evaluation (forward pass and inner solve), one gradient and two Gauss-Newton
    products (6 work units) after an untimed warm-up product; the output basis and the
    float32 features of ``cfg`` are used as in training.
    """
    cfg = copy.deepcopy(cfg)
    cfg["model"]["width"] = width
    model = build_model(training_config("gnvpro", cfg), data, [n_steps], seed, device)
    y = model.encode(torch.as_tensor(data.y["train"], device=device)).to(model.W.dtype)
    c = model.normalizer.transform_c(torch.as_tensor(data.c["train"], device=device))
    opt = GNvpro(output_basis_tol=cfg["gnvpro"]["output_basis_tol"])
    counter = WorkCounter()
    problem = VarProProblem(model.features, y, c, counter=counter, basis=opt.basis(c))
    theta = problem.flat.get()
    state = problem.evaluate(theta)
    v = problem.gradient(state)
    problem.gn_hvp(state, v)                              # warm-up
    _sync(device)
    t0, wu0 = time.perf_counter(), counter.units
    state = problem.evaluate(theta)
    v = problem.gradient(state)
    v = problem.gn_hvp(state, v)
    problem.gn_hvp(state, v)
    _sync(device)
    return (time.perf_counter() - t0) / (counter.units - wu0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plan_time_budget(cfg: dict, data: SplitData, seconds: float, *, seed: int,
                     device: torch.device, stream: TextIO | None = None) -> TimePlan:
    """Choose the width and the seconds of each level for a budget of ``seconds``.

    Parameters
    ----------
    cfg : dict
        The resolved configuration (its levels, normalisation, output basis and float32
        setting are used; its width is replaced).
    data : SplitData
    seconds : float
        Wall-time budget of the training (positive).
    seed : int
    device : torch.device
    stream : text stream, optional
        One line per probed width and one for the plan.
    """
    t0 = time.perf_counter()
    levels = cfg["model"]["levels"]
    candidates = candidate_widths(cfg, data, device)
    shares = level_shares(len(levels))
    plan = TimePlan(seconds=float(seconds), width=candidates[0], level_seconds=[],
                    probe_seconds=0.0, widths=candidates)
    for w in reversed(candidates):
        coarse = probe_rate(cfg, data, w, levels[0], seed, device)
        fine = probe_rate(cfg, data, w, levels[-1], seed, device) if len(levels) > 1 \
            else coarse
        rates = [_interpolate(levels, d, coarse, fine) for d in levels]
        left = seconds * (1.0 - RESERVE) - (time.perf_counter() - t0)
        affordable = sum(share * max(left, 0.0) / rate for share, rate in zip(
            shares, rates, strict=True))
        plan.seconds_per_wu[w] = [coarse, fine]
        plan.affordable_wu[w] = affordable
        if stream is not None:
            print(f"time budget: width {w}: {1e3 * coarse:.1f} / {1e3 * fine:.1f} ms per work "
                  f"unit (d={levels[0]} / d={levels[-1]}), {affordable:.0f} work units "
                  f"affordable (wanted {WU_PER_WIDTH * w:.0f})", file=stream, flush=True)
        plan.width = w
        if affordable >= WU_PER_WIDTH * w or time.perf_counter() - t0 > PROBE_SHARE * seconds:
            break
    plan.probe_seconds = time.perf_counter() - t0
    left = max(seconds * (1.0 - RESERVE) - plan.probe_seconds, 0.0)
    plan.level_seconds = [share * left for share in shares]
    if stream is not None:
        print(f"time budget: {seconds:g} s -> width {plan.width} (of {candidates}), levels "
              f"{', '.join(f'{s:.1f}' for s in plan.level_seconds)} s after "
              f"{plan.probe_seconds:.1f} s of probes", file=stream, flush=True)
    return plan


def candidate_widths(cfg: dict, data: SplitData, device: torch.device) -> list[int]:
    """The widths :func:`plan_time_budget` considers, narrowest first (module docstring).

    From the width the run would have without a budget (``cfg["model"]["width"]``: the
    preset's, e.g. 10 for CDR and 64 for DCR, or the data-driven one) up to the data width of
    the *independent* target values: :func:`train.auto.data_width` with the number of
    principal directions of the training targets above :data:`train.auto.SPECTRUM_TOL` in
    place of the number of outputs. Counting every output over-states what correlated outputs
    can teach: on CDR 800 (400 training samples, 72 outputs, 17 directions) it allowed width
    53, which over-fitted (test 0.0073 after 30 s against the default's 0.0036 after 3 s);
    DCR 10,000 (37 directions of 882) keeps the widest candidate.
    """
    c = data.c["train"]
    n_in = data.n_in + len(cfg["model"].get("periodic_inputs") or {})
    base = int(cfg["model"]["width"])
    directions = spectrum_width(c, cfg["normalization"]["scale_targets"], SPECTRUM_TOL, 1,
                                max(1, min(c.shape)))
    upper = max(base, data_width(c.shape[0], directions, n_in, cfg["model"]["levels"][-1],
                                 WIDTHS[0], WIDTHS[-1]))
    widths = sorted({base, upper, *(w for w in WIDTHS if base <= w <= upper)})
    fitting = [w for w in widths if _fits(cfg, data, w, device)]
    return fitting or [widths[0]]


def _fits(cfg: dict, data: SplitData, width: int, device: torch.device) -> bool:
    """Whether training at ``width`` passes the memory estimate of :mod:`train.resources`."""
    trial = copy.deepcopy(cfg)
    trial["model"]["width"] = width
    try:
        check_memory(trial, "gnvpro", data.y["train"].shape[0], data.n_in, data.n_out, device)
    except MemoryEstimateError:
        return False
    return True


def _interpolate(levels: list[int], d: int, coarse: float, fine: float) -> float:
    """Seconds per work unit at ``d`` steps, linear in d between the first and last level."""
    lo, hi = levels[0], levels[-1]
    if hi == lo:
        return coarse
    t = (d - lo) / (hi - lo)
    return (1 - t) * coarse + t * fine


#: work units per level of a time-budgeted run: unlimited in practice (the levels stop on time)
UNLIMITED_WU = 1e12


def apply_plan(cfg: dict, plan: TimePlan) -> dict:
    """``cfg`` with the plan's width and unlimited work units (the levels stop on time)."""
    cfg = copy.deepcopy(cfg)
    cfg["model"]["width"] = plan.width
    cfg["gnvpro"]["work_units_per_level"] = [UNLIMITED_WU] * len(cfg["model"]["levels"])
    return cfg
