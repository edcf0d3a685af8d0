"""Planning an evaluation: which solver, which samples, and the refusals (rank 0, writes
nothing).

The fresh parameters come from the training data's own sampler and solver settings, read from
the provenance in the model's ``metadata.json`` (:func:`surrogate.metadata.solver_provenance`).
The problem is re-resolved from the recorded plugin identity (a file plugin by its absolute
path, a module or entry point by name) and refused if its code or settings changed since the
data was made (:func:`solvers.plugins.check_unchanged`), unless the request allows it.
Sample ``i`` of a dataset with seed ``s`` has the parameters
``solver.sample_parameters(default_rng([s, i]))`` (:mod:`datasets.sampling`), so

* the training seed would reproduce the training samples and is refused, and
* the training parameters can be re-drawn from the provenance alone (or read from the training
  file, for data without provenance) and the fresh ones are checked to be disjoint from them
  before anything is written.

Everything that can be refused is refused here, before the first solve: the model (metadata,
provenance, weights and their SHA-256), the device, the report folder, the sample count (the
memory guard of ``generate-dataset``), the seed, and with ``--data`` the file's solver
settings (they must be the model's unless ``--allow-different-settings``).

Solvers, datasets and mpi4py are imported inside the functions, so that importing this module
stays free of dolfinx, PETSc and MPI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from solvers.common.memory import check_memory
from surrogate.device import resolve_device, training_device
from surrogate.errors import EvaluationError, SurrogateFormatError, UsageError
from surrogate.evaluation.request import FRESH_FILE, EvaluationRequest, Plan
from surrogate.metadata import (
    SolverProvenance,
    read_metadata,
    solver_provenance,
    training,
    training_file,
)

#: the report's note when the fresh samples cannot be checked against the training samples
OVERLAP_UNCHECKED = ("training parameters unknown (no provenance, file gone): overlap with "
                     "the training samples not checked")


def plan(request: EvaluationRequest) -> Plan:
    """Check the request against the model and decide what to solve; writes nothing.

    Raises
    ------
    EvaluationError
        Training seed, overlap with the training parameters, a model without solver
        provenance and neither ``data`` nor ``problem``, shape mismatches, bad options.
    surrogate.errors.UsageError
        A ``device`` other than cpu, cuda or cuda:N, or CUDA absent.
    """
    check_report_folder(Path(request.out))
    try:
        meta = read_metadata(request.model_dir)
        n_in, n_out = model_sizes(meta)
    except SurrogateFormatError as exc:
        raise EvaluationError(str(exc)) from None
    try:
        prov = solver_provenance(meta)
    except SurrogateFormatError as exc:
        raise EvaluationError(f"{request.model_dir}/{exc}") from None
    device = surrogate_device(request.device, meta)
    _check_weights(request.model_dir, device)
    if request.data is not None:
        result = _plan_data(request, meta, prov, n_in, n_out)
    else:
        result = _plan_solve(request, meta, prov, n_in, n_out)
    result.device = str(device)
    return result


def check_report_folder(out: Path) -> None:
    """Refuse a report folder that cannot be created or written (EvaluationError).

    ``--out ''`` is refused by the command line (argparse turns it into ``.``)."""
    text = str(out)
    if os.path.lexists(out) and not out.is_dir():
        raise EvaluationError(f"--out {text}: exists and is not a folder")
    parent = out
    while not parent.exists():
        if parent.is_symlink():                         # a dangling link
            raise EvaluationError(f"--out {text}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise EvaluationError(f"--out {text}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EvaluationError(f"--out {text}: no permission to write in {parent}")


def _check_weights(model_dir: Path, device: Any) -> None:
    """Load the model once (weights, SHA-256, architecture; every member of an ensemble) so
    that a tampered or missing weights file is refused before any solve."""
    from surrogate.uq_model import load

    try:
        load(model_dir, device=device)
    except SurrogateFormatError as exc:
        raise EvaluationError(str(exc)) from None


def model_sizes(meta: dict[str, Any]) -> tuple[int, int]:
    """(raw parameters before any input encoding, observables) of a model's metadata."""
    model = meta["model"]
    try:
        encoding = model.get("encoding")
        n_in = encoding["n_in"] if encoding else model["features"]["n_in"]
        return int(n_in), int(model["n_out"])
    except (KeyError, TypeError, ValueError):
        raise SurrogateFormatError("metadata.json: model.features.n_in / model.encoding.n_in "
                                   "/ model.n_out missing or not integers") from None


def surrogate_device(requested: str | None, meta: dict[str, Any]) -> Any:
    """``requested`` (checked: cpu, cuda, cuda:N and available), else the training device
    when it is available here, else the CPU; a ``torch.device``."""
    if requested is not None:
        try:
            return resolve_device(requested)
        except UsageError as exc:
            raise EvaluationError(str(exc)) from None
    return training_device(str(training(meta).get("device", "cpu")))


def _plan_solve(request: EvaluationRequest, meta: dict[str, Any],
                prov: SolverProvenance | None, n_in: int, n_out: int) -> Plan:
    """Plan fresh solves: solver from the provenance (or ``--problem``), seed and overlap
    checks."""
    spec, settings = _fresh_problem(request, prov)
    problem, solver, info = build_problem(spec, settings)
    notes = []
    if prov is not None:
        changes = _unchanged(prov, info, request.allow_changed_plugin)
        notes += [f"the plugin changed since the training data was made (allowed): {c}"
                  for c in changes]
    settings = info.settings
    if (solver.n_parameters, solver.n_observables) != (n_in, n_out):
        raise EvaluationError(
            f"{info.name} with these settings maps {solver.n_parameters} parameters to "
            f"{solver.n_observables} observables, but the surrogate maps {n_in} to {n_out}")
    from datasets.sampling import check_seed, draw_all_parameters

    try:
        seed = check_seed(request.seed)
    except ValueError as exc:
        raise EvaluationError(f"--seed: {exc}") from None
    fresh_path = request.out / FRESH_FILE
    complete = complete_fresh_file(fresh_path, info.name, settings, request.samples, seed)
    check_sample_count(spec, fresh_path, request.samples, solver, disk=not complete)
    if prov is not None:          # the training parameters are re-drawn (and hashed)
        check_memory(prov.n_samples * (16.0 * solver.n_parameters + 100),
                     f"re-drawing the {prov.n_samples} training samples recorded in "
                     f"{request.model_dir}/metadata.json", error=EvaluationError)
    fresh = draw_all_parameters(solver, seed, request.samples, progress=request.progress)
    notes += _check_disjoint(fresh, meta, solver, f"--seed {request.seed}")
    return Plan(info.name, True, settings, fresh_path, notes, complete=complete,
                spec=problem.identity.resolvable_spec)


def check_sample_count(problem: str, out: Path, samples: int, solver: Any, disk: bool = True
                       ) -> None:
    """The memory and (with ``disk``) disk guard of ``generate-dataset`` for ``samples``
    fresh samples (:func:`datasets.generate.check_sizes`); EvaluationError."""
    from datasets.errors import ConfigError
    from datasets.generate import GenerationOptions, check_sizes

    try:
        check_sizes(GenerationOptions(problem=problem, out=out, samples=samples), solver,
                    disk=disk)
    except ConfigError as exc:
        raise EvaluationError(str(exc)) from None


def complete_fresh_file(path: Path, problem: str, settings: dict[str, Any], samples: int,
                        seed: int) -> bool:
    """Whether ``path`` already holds every fresh solve of this request (a complete dataset
    of the same problem, solver settings, sample count and seed): then nothing is solved or
    written again, and no disk space is needed."""
    if not path.is_file():
        return False
    from datasets import DatasetFileError, open_dataset

    try:
        ds = open_dataset(path, include_failed=True)
        config = json.loads(ds.attrs["config"])
        gen = config["generation"]
        return (bool(ds.attrs.get("complete", False)) and config["problem"] == problem
                and config["solver"] == json.loads(json.dumps(settings))
                and int(gen["samples"]) == samples and int(gen["seed"]) == seed)
    except (DatasetFileError, OSError, KeyError, TypeError, ValueError):
        return False        # let generate-dataset's resume say what is wrong with it


def _fresh_problem(request: EvaluationRequest, prov: SolverProvenance | None
                   ) -> tuple[str, dict[str, Any]]:
    """Problem spec and solver settings of the fresh solves, after the option checks."""
    if prov is not None and request.problem is not None:
        raise EvaluationError(
            f"--problem/--set are for models without solver provenance; {request.model_dir} "
            f"was trained on {prov.problem} data whose solver settings it records")
    if prov is None and request.problem is None:
        raise EvaluationError(
            f"{request.model_dir} was trained on data without solver provenance (an external "
            ".npz/.mat file), so its samples cannot be re-solved: pass --data FILE to evaluate "
            "on an existing dataset, or --problem PROBLEM (a registered name, module:Class or "
            "file.py:Class; with --set KEY=VALUE settings) to solve fresh samples")
    if request.seed is None:
        raise EvaluationError("--seed is required when solving fresh samples")
    if request.samples < 1:
        raise EvaluationError(f"--samples must be >= 1, got {request.samples}")
    if prov is None:
        return str(request.problem), dict(request.settings)
    if request.seed == prov.seed:
        raise EvaluationError(
            f"--seed {request.seed} is the training data's seed: it would re-draw the "
            f"training samples; choose another seed")
    return prov.spec, dict(prov.settings)


def _plan_data(request: EvaluationRequest, meta: dict[str, Any],
               prov: SolverProvenance | None, n_in: int, n_out: int) -> Plan:
    """Plan an evaluation on the existing dataset ``request.data`` (``--data``): sizes, solver
    settings and overlap."""
    from datasets import DatasetFileError, open_dataset

    data = Path(str(request.data))
    try:
        ds = open_dataset(data, include_failed=True)
    except DatasetFileError as exc:
        raise EvaluationError(str(exc)) from None
    y = np.asarray(ds["y"].values, dtype=np.float64)
    m = ds.sizes["observable"]
    if (y.shape[1], m) != (n_in, n_out):
        raise EvaluationError(f"{data}: {y.shape[1]} parameters and {m} observables, "
                              f"but the surrogate maps {n_in} to {n_out}")
    notes = _check_settings(data, ds.attrs, prov, request.allow_different_settings)
    solver, unavailable = _provenance_solver(prov)
    notes += unavailable
    notes += _check_disjoint(y, meta, solver, f"--data {data}")
    problem = str(ds.attrs.get("problem", prov.problem if prov else "unknown"))
    return Plan(problem, False, None, data, notes)


def _check_settings(data: Path, attrs: Any, prov: SolverProvenance | None,
                    allow: bool) -> list[str]:
    """Compare the ``--data`` file's recorded problem and solver settings with the model's
    provenance (:func:`datasets.config.differences`); refuse a difference unless ``allow``.
    Returns the report's notes."""
    from datasets.config import differences

    if prov is None:
        return []
    try:
        config = json.loads(attrs["config"])
        recorded = {"problem": config["problem"], "solver": dict(config["solver"])}
    except (KeyError, TypeError, ValueError):
        return [f"{data} records no solver settings: they could not be compared with the "
                "training data's"]
    diff = differences({"problem": prov.problem, "solver": prov.settings}, recorded)
    if not diff:
        return []
    listed = "; ".join(d.replace("file has", "training data has").replace("requested", "--data has")
                       for d in diff[:6]) + ("; ..." if len(diff) > 6 else "")
    if not allow:
        keys = ", ".join(d.split(":")[0] for d in diff)
        raise EvaluationError(
            f"--data {data} was solved with other solver settings than the model's training "
            f"data ({keys}): {listed}; its errors would measure the difference of the two "
            "problems, not the surrogate: pass --allow-different-settings to evaluate anyway")
    return [f"--data {data} was solved with other solver settings than the training data "
            f"(--allow-different-settings): {listed}"]


# ------------------------------------------------------------------------- training samples
def build_problem(spec: str, settings: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The problem of ``spec`` resolved, built on COMM_SELF (only for drawing parameters and
    checking it) and described: ``(Problem, solver, ProblemInfo)``.

    Raises
    ------
    solvers.plugins.PluginError
        The plugin cannot be resolved or breaks its contract (exit status 2).
    EvaluationError
        Bad settings.
    """
    from solvers.common.mpi_network import init_mpi
    from solvers.plugins import PluginError, resolve_problem

    MPI = init_mpi()

    problem = resolve_problem(spec)
    try:
        solver = problem.build(MPI.COMM_SELF, **settings)
    except PluginError:
        raise
    except (ValueError, TypeError) as exc:
        raise EvaluationError(f"invalid {problem.name} settings: {exc}") from None
    return problem, solver, problem.describe(solver)


def make_solver(problem: str, settings: dict[str, Any]) -> Any:
    """A solver of the spec ``problem`` on COMM_SELF (only for drawing parameters); bad
    settings -> EvaluationError."""
    return build_problem(problem, settings)[1]


def _unchanged(prov: SolverProvenance, info: Any, allow: bool) -> list[str]:
    """The changes of the re-resolved plugin against the recorded one (PluginChangedError
    naming them unless ``allow``)."""
    from solvers.plugins import check_unchanged

    return check_unchanged(prov.plugin, prov.settings, info, allow=allow)


def _provenance_solver(prov: SolverProvenance | None) -> tuple[Any | None, list[str]]:
    """The recorded problem, built to re-draw the training parameters (``--data``), or None
    with a note when it cannot be resolved or changed (the training file is used then)."""
    from solvers.plugins import PluginError

    if prov is None:
        return None, []
    try:
        _, solver, info = build_problem(prov.spec, prov.settings)
        if _unchanged(prov, info, allow=True):
            return None, [f"{info.label} changed since the training data was made: training "
                          "parameters read from the training file instead of re-drawn"]
    except (PluginError, EvaluationError) as exc:
        return None, [f"training problem not available ({exc}): training parameters read "
                      "from the training file instead of re-drawn"]
    return solver, []


def training_parameters(meta: dict[str, Any], solver: Any | None) -> np.ndarray | None:
    """Parameters of every training-file sample, shape (n, p), or None if unknown.

    Re-drawn from the provenance (seed, sample count, sampler of ``solver``) when the model
    has solver provenance, else read from the training file if it is still there unchanged.
    """
    prov = solver_provenance(meta)
    if prov is not None and solver is not None:
        from datasets.sampling import draw_all_parameters

        return draw_all_parameters(solver, prov.seed, prov.n_samples)
    path = training_file(meta)
    if path is None:
        return None
    from datasets import open_dataset

    return np.asarray(open_dataset(path, include_failed=True)["y"].values, dtype=np.float64)


def overlap(fresh: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Indices of rows of ``fresh`` (n, p) equal to some row of ``train`` (k, p)."""
    seen = {np.ascontiguousarray(row).tobytes() for row in np.asarray(train, np.float64)}
    return np.array([i for i, row in enumerate(np.asarray(fresh, np.float64))
                     if np.ascontiguousarray(row).tobytes() in seen], dtype=np.int64)


def _check_disjoint(fresh: np.ndarray, meta: dict[str, Any], solver: Any | None,
                    what: str) -> list[str]:
    """Refuse fresh parameters (n, p) that repeat training parameters; returns the notes."""
    train = training_parameters(meta, solver)
    if train is None:
        return [OVERLAP_UNCHECKED]
    common = overlap(fresh, train)
    if common.size:
        raise EvaluationError(
            f"{what}: {common.size} of {len(fresh)} evaluation samples (first: sample "
            f"{common[0]}) have the same parameters as training-data samples; an evaluation "
            f"must use samples the surrogate has not seen")
    return []
