"""Candidates, their scores, and the batch to solve.

Round r's candidates are drawn from the problem's own sampler, candidate i with the
generator ``numpy.random.default_rng([seed, CANDIDATE_STREAM, r, i])``: reproducible, and a
stream distinct from every dataset's sample streams ``[seed, i]``. The adaptive strategy
solves the candidates with the largest predicted relative error
``||std_i|| / ||mean_i - c_shift||`` (:func:`surrogate.uncertainty.predicted_relative_error`;
the quantity whose mean over fresh samples is the target); the uniform strategy takes the
first candidates, i.e. plain draws from the sampler.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from surrogate.uncertainty import predicted_relative_error
from surrogate.uq_model import OutOfBoxWarning

#: spawn key of the candidate streams ("ref")
CANDIDATE_STREAM = 0x726566


def draw_candidates(solver: Any, seed: int, round_: int, n: int) -> np.ndarray:
    """``n`` candidate parameters of round ``round_``, shape (n, p), physical units."""
    return np.array([solver.sample_parameters(
        np.random.default_rng([int(seed), CANDIDATE_STREAM, int(round_), i]))
        for i in range(n)], dtype=np.float64).reshape(n, -1)


def score(model: Any, candidates: np.ndarray) -> np.ndarray:
    """Predicted relative error of each candidate, shape (n,).

    Parameters
    ----------
    model : surrogate.ensemble.EnsembleSurrogate
    candidates : numpy.ndarray, shape (n, p)
    """
    with warnings.catch_warnings():         # candidates may leave the training box
        warnings.simplefilter("ignore", OutOfBoxWarning)
        mean, std = model.predict(candidates, return_std=True)
    norm = model.torch_model.normalizer
    shift = norm.c_shift.cpu().numpy() if norm.center_targets else None
    return predicted_relative_error(mean, std, shift)


def select(strategy: str, scores: np.ndarray, batch: int) -> np.ndarray:
    """Indices of the candidates to solve, ascending.

    Parameters
    ----------
    strategy : "adaptive" (the ``batch`` largest scores) or "uniform" (the first ``batch``)
    scores : numpy.ndarray, shape (n,)
    batch : int
    """
    if strategy == "uniform":
        return np.arange(min(batch, scores.size))
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:batch])
