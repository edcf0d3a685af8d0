"""Per-sample parameter draws that depend only on (dataset seed, sample index).

Sample ``i`` of a dataset with seed ``s`` uses the generator ``np.random.default_rng([s, i])``,
so its parameters do not depend on the number of MPI ranks, the order in which samples are
solved, or on how often a job was interrupted and resumed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: seeds are stored as HDF5 int64 attributes: 0 <= seed <= MAX_SEED
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int:
    """Return ``seed`` as an int in [0, 2^63 - 1] or raise ValueError (numpy seeds must be
    non-negative; the dataset file stores the seed as an int64 attribute)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or \
            not 0 <= seed <= MAX_SEED:
        shown = repr(seed) if len(repr(seed)) <= 40 else repr(seed)[:37] + "..."
        raise ValueError(f"seed must be an integer in [0, 2^63 - 1], got {shown}")
    return int(seed)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample ``index`` in a dataset with seed ``seed``."""
    return np.random.default_rng([check_seed(seed), int(index)])


def draw_parameters(solver: Any, seed: int, index: int) -> np.ndarray:
    """Parameters of sample ``index``: ``solver.sample_parameters(sample_rng(seed, index))``.

    Returns
    -------
    numpy.ndarray
        Shape (solver.n_parameters,), float64.
    """
    return np.asarray(solver.sample_parameters(sample_rng(seed, index)), dtype=np.float64)


def draw_all_parameters(solver: Any, seed: int, n_samples: int, progress: bool = False
                        ) -> np.ndarray:
    """Parameters of samples 0..n_samples-1, shape (n_samples, solver.n_parameters), float64.

    With ``progress``, a tqdm bar shows the drawing when it takes a while (about 5 us per
    sample, i.e. a minute for 10^7 samples).
    """
    y = np.empty((n_samples, solver.n_parameters))
    show = progress and n_samples >= PROGRESS_MIN_SAMPLES
    from tqdm import tqdm

    for i in tqdm(range(n_samples), desc="drawing parameters", unit="sample", disable=not show,
                  mininterval=1.0, dynamic_ncols=True):
        y[i] = draw_parameters(solver, seed, i)
    return y


#: show a progress bar for drawing parameters from this many samples on
PROGRESS_MIN_SAMPLES = 200_000
