"""``evaluate-surrogate``: a trained surrogate against fresh PDE solves (or an existing
dataset), with a report of errors, training-box coverage and cost.

Modules, in the order a request goes through them:

``request``  :class:`EvaluationRequest` (what to evaluate) and the resolved ``Plan``
``plan``     provenance, solver, seed and overlap checks, device (rank 0; writes nothing)
``run``      :func:`evaluate`: the MPI run, fresh solves through :mod:`datasets.generate`
``report``   statistics (:mod:`surrogate.metrics`), box, cost, ``report.json``/``report.md``
``text``     :func:`summary_table` and the markdown
``plots``    the figures
``cli``      the ``evaluate-surrogate`` command

Importing this package stays free of dolfinx, PETSc, MPI and :mod:`datasets` (they are
imported when an evaluation runs).
"""

from surrogate.errors import EvaluationError
from surrogate.evaluation.request import EvaluationRequest
from surrogate.evaluation.run import evaluate
from surrogate.evaluation.text import summary_table

__all__ = ["EvaluationError", "EvaluationRequest", "evaluate", "summary_table"]
