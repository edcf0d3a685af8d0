"""Checks before a refinement run and what it resolves to (rank 0; writes nothing).

The starting model must be an ensemble trained on a ``generate-dataset`` file that is still
there unchanged: its solver provenance gives the problem, the solver settings and the sampler
of the candidates and of the check set, and its splits are the base of the growing dataset
(the validation split stays the one the ensembles are selected and calibrated on).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solvers.common.atomic import sha256_file
from solvers.errors import UsageError
from surrogate.errors import SurrogateFormatError
from surrogate.metadata import (
    METADATA_FILE,
    ensemble_entry,
    is_ensemble,
    read_metadata,
    solver_provenance,
    training,
    training_file,
)
from surrogate.refinement.options import RefineOptions

#: default offset of the check set's seed from the training data's seed
CHECK_SEED_OFFSET = 1000


@dataclass(frozen=True)
class RefinePlan:
    """What a refinement run works with (picklable; decided on rank 0 and broadcast).

    Attributes
    ----------
    problem : str
        The problem spec that resolves the training data's problem (a plugin's recorded
        import path: :attr:`surrogate.metadata.SolverProvenance.spec`).
    settings : dict
        The training data's solver settings (the same for every solve of the run).
    base_data : Path
        The starting model's training file.
    method : str
    config : dict
        The resolved training configuration of the starting model (reused every round).
    seed : int
        The ensemble's seed (members' seeds derive from it).
    size : int
        Number of members.
    data_seed : int
        Seed of the training data (split of the batches' files).
    candidate_seed, check_seed : int
    fingerprint : str
        SHA-256 of the options that decide the result, the starting model and its data.
    """

    problem: str
    settings: dict[str, Any]
    base_data: Path
    method: str
    config: dict[str, Any]
    seed: int
    size: int
    data_seed: int
    candidate_seed: int
    check_seed: int
    fingerprint: str


def make_plan(options: RefineOptions) -> RefinePlan:
    """Check the starting model and resolve the run.

    Raises
    ------
    UsageError
        Not an ensemble, a model without solver provenance or whose training file is gone
        or changed, a check seed equal to the training data's seed.
    """
    try:
        meta = read_metadata(options.model_dir)
    except SurrogateFormatError as exc:
        raise UsageError(str(exc)) from None
    if not is_ensemble(meta):
        raise UsageError(f"{options.model_dir} is a single model: refine-surrogate scores "
                         "candidates by an ensemble's spread; train one with train-surrogate "
                         "--ensemble K")
    prov = solver_provenance(meta)
    if prov is None:
        raise UsageError(f"{options.model_dir} was trained on data without solver provenance "
                         "(.npz/.mat): refine-surrogate needs a generate-dataset file to draw "
                         "and solve new samples")
    base = training_file(meta)
    if base is None:
        raise UsageError(f"{options.model_dir}: its training data file "
                         f"{training(meta).get('data', {}).get('path')} is gone or changed; "
                         "the refinement grows that dataset")
    check_seed = options.check_seed if options.check_seed is not None \
        else prov.seed + CHECK_SEED_OFFSET
    if check_seed == prov.seed:
        raise UsageError(f"--check-seed {check_seed} is the training data's seed: the check "
                         "set must be fresh samples")
    t = training(meta)
    entry = ensemble_entry(meta)
    identity = {"options": options.identity(), "check_seed": check_seed,
                "model": sha256_file(Path(options.model_dir) / METADATA_FILE),
                "data": sha256_file(base)}
    return RefinePlan(
        problem=prov.spec, settings=dict(prov.settings), base_data=Path(base),
        method=str(t["method"]), config=dict(t["config"]), seed=int(t.get("seed", 0)),
        size=len(entry["members"]), data_seed=prov.seed,
        candidate_seed=options.seed if options.seed is not None else prov.seed,
        check_seed=check_seed,
        fingerprint=hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest())
