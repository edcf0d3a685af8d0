"""The facts a problem declares about itself that can be read without building it.

A problem class may declare, as class attributes (see :mod:`solvers.plugins` for the whole
contract)::

    default_samples = 800                      # generate-dataset's --samples default
    default_split = (0.5, 0.25, 0.25)          # train/validation/test fractions
    periodic_parameters = {2: math.pi}         # {parameter index: period}
    training_hints = {"standardize_inputs": False, "center_targets": False}
    default_sizes = (55, 72)                   # (n_parameters, n_observables), default settings

and its help text is the first line of its docstring. :func:`class_facts` reads them (with
the fallbacks: none declared) into a :class:`ProblemFacts`.

The package's own problems live in modules that import dolfinx or PETSc (and so MPI); their
facts are also stored in a light module each (``solvers.cdr_settings.FACTS``,
``solvers.dcr_settings.FACTS``, numpy only) and registered in :data:`solvers.FACTS`, so that
the layers above can look them up without loading a solver: :func:`registered_facts` (the
facts of a registered name) and :func:`problem_for_sizes` (which registered problem a foreign
data file of given sizes holds). Nothing outside the problems' own modules and the registry
names a problem.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: keys a problem's ``training_hints`` may hold (each a bool or None: the trainer's default)
TRAINING_HINT_KEYS: tuple[str, ...] = ("standardize_inputs", "center_targets",
                                       "periodic_inputs")


@dataclass(frozen=True)
class ProblemFacts:
    """Static per-problem facts (everything optional but the name).

    Attributes
    ----------
    name : str
        Problem name.
    help : str
        One line of help text.
    default_sizes : (int, int) or None
        (n_parameters, n_observables) with the default settings; foreign data files of
        these sizes are taken to hold this problem (registered problems only).
    default_samples : int or None
        Dataset size used when ``--samples`` is not given (the paper's, for CDR and DCR).
    default_split : (float, float, float) or None
        Train/validation/test fractions.
    periodic_parameters : dict
        {parameter index: period > 0}.
    training_hints : dict
        {key of :data:`TRAINING_HINT_KEYS`: bool or None}.
    """

    name: str
    help: str = ""
    default_sizes: tuple[int, int] | None = None
    default_samples: int | None = None
    default_split: tuple[float, float, float] | None = None
    periodic_parameters: Mapping[int, float] = field(default_factory=dict)
    training_hints: Mapping[str, bool | None] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The facts training needs, as JSON (stored in a dataset's configuration):
        ``{"periodic_parameters": {"2": 3.14...}, "default_split": [...] or None,
        "training_hints": {...}}``."""
        return facts_record(self.periodic_parameters, self.default_split, self.training_hints)


def facts_record(periodic: Mapping[int, float], split: Any, hints: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """JSON form of the training facts (index keys as strings, as JSON requires)."""
    return {"periodic_parameters": {str(int(k)): float(v) for k, v in periodic.items()},
            "default_split": [float(v) for v in split] if split is not None else None,
            "training_hints": {k: (None if hints.get(k) is None else bool(hints[k]))
                               for k in TRAINING_HINT_KEYS}}


def class_facts(cls: type, name: str | None = None) -> ProblemFacts:
    """The static facts a problem class declares (unchecked: :mod:`solvers.plugins` checks an
    instance's facts when it describes it).

    Parameters
    ----------
    cls : type
        The problem class.
    name : str, optional
        Problem name (default: the class's ``name`` attribute, else its lower-cased name).
    """
    declared = getattr(cls, "name", None)
    name = name or (declared if isinstance(declared, str) and declared else cls.__name__.lower())
    doc = inspect.getdoc(cls) if cls.__doc__ is not None else None
    help_text = doc.strip().splitlines()[0].strip() if doc else f"{cls.__name__} (no docstring)"

    def attr(key: str) -> Any:
        value = inspect.getattr_static(cls, key, None)
        return None if callable(value) or isinstance(value, property | classmethod
                                                     | staticmethod) else value

    sizes, samples, split = attr("default_sizes"), attr("default_samples"), \
        attr("default_split")
    periodic, hints = attr("periodic_parameters"), attr("training_hints")
    return ProblemFacts(
        name=name, help=help_text,
        default_sizes=tuple(sizes) if _is_pair(sizes) else None,
        default_samples=int(samples) if _is_count(samples) else None,
        default_split=tuple(split) if split is not None else None,
        periodic_parameters=dict(periodic) if isinstance(periodic, Mapping) else {},
        training_hints=dict(hints) if isinstance(hints, Mapping) else {})


def _is_pair(value: Any) -> bool:
    try:
        return len(value) == 2 and all(_is_count(v) for v in value)
    except TypeError:
        return False


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def registered_facts(name: str) -> ProblemFacts | None:
    """The facts of the registered problem ``name``, or None if no such problem is registered.

    Read from its light facts module (:data:`solvers.FACTS`) when it has one, else from its
    class.
    """
    from solvers import FACTS, SOLVERS

    if name in FACTS:
        module, _, attr = FACTS[name].partition(":")
        facts = getattr(importlib.import_module(module), attr)
        if not isinstance(facts, ProblemFacts):
            raise TypeError(f"solvers.FACTS[{name!r}] = {FACTS[name]!r} is not ProblemFacts")
        return facts
    if name in SOLVERS:
        module, _, attr = SOLVERS[name].partition(":")
        return class_facts(getattr(importlib.import_module(module), attr), name)
    return None


def problem_for_sizes(n_parameters: int, n_observables: int) -> str | None:
    """The registered problem whose default sizes are (n_parameters, n_observables), if exactly
    one declares them (foreign data files without a ``problem`` attribute); else None."""
    from solvers import FACTS

    found = [name for name in FACTS
             if (f := registered_facts(name)) is not None
             and f.default_sizes == (int(n_parameters), int(n_observables))]
    return found[0] if len(found) == 1 else None


def training_facts(name: str) -> dict[str, Any]:
    """The JSON training facts (:meth:`ProblemFacts.record`) of a registered problem, or {}
    for a name that is not registered (``"unknown"``, a plugin's name)."""
    facts = registered_facts(name)
    return facts.record() if facts is not None else {}


def periodic_from_record(record: Mapping[str, Any]) -> dict[int, float]:
    """``{"2": 3.14}`` (JSON) -> ``{2: 3.14}``; entries that are not index: period > 0 are
    dropped."""
    out = {}
    for key, value in (record.get("periodic_parameters") or {}).items():
        try:
            k, p = int(key), float(value)
        except (TypeError, ValueError):
            continue
        if k >= 0 and math.isfinite(p) and p > 0:
            out[k] = p
    return out


__all__ = ["TRAINING_HINT_KEYS", "ProblemFacts", "class_facts", "facts_record",
           "periodic_from_record", "problem_for_sizes", "registered_facts", "training_facts"]
