"""Adaptive sampling to a target error: ``refine-surrogate`` (issue 19).

::

    mpiexec -n N refine-surrogate MODEL_DIR --target 0.005 --max-solves 2000 --batch 100 \\
        --out DIR [--strategy adaptive|uniform]

Starting from an ensemble (``train-surrogate --ensemble K``) and its training data, each
round draws candidate parameters from the problem's own sampler, scores them by the
ensemble's predicted relative error ``||std|| / ||mean - c_shift||``, solves the
highest-scoring batch with the ``generate-dataset`` engine (MPI, resumable), retrains the
ensemble on the grown data (warm start from the current members, finest level) and measures
the error on a fixed set of fresh solves. It stops when that error reaches the target or the
solve budget is spent. ``--strategy uniform`` takes the first candidates instead (plain
uniform sampling through the same loop: the baseline of ``bench/bench_refine.py``).

Modules: ``options`` (:class:`RefineOptions`), ``plan`` (checks and the resolved
:class:`RefinePlan`, rank 0), ``selection`` (candidates and scores), ``data`` (the growing
dataset), ``state`` (``state.json``, resume), ``loop`` (:func:`refine`, the MPI run),
``plots`` and ``cli``. Importing this package stays free of dolfinx, PETSc and MPI.
"""

from surrogate.refinement.options import RefineOptions

__all__ = ["RefineOptions"]
