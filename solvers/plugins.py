"""Problem plugins: resolve a problem spec to a solver class, check its contract, describe it.

A *problem* is any class that follows the :class:`solvers.base.PDESolver` protocol::

    class MyModel:
        "One line of help text (the class docstring; shown by --help)."
        name = "my_model"           # str
        n_parameters = 4            # int >= 1 (class or instance attribute)
        n_observables = 25          # int >= 1
        def __init__(self, comm, **settings): ...
        def solve(self, y, *, sample=None): ...     # -> (n_observables,) real numbers
        def settings(self): ...                     # -> JSON-serialisable dict
        def sample_parameters(self, rng): ...       # -> (n_parameters,), draws only from rng

A spec names the class in one of four ways (:func:`resolve_problem`, tried in this order):

``dcr``
    a name registered in :data:`solvers.SOLVERS` (the package's own problems);
``my_model``
    the name of an entry point in the group :data:`ENTRY_POINT_GROUP`
    (``varpro_surrogates.problems``) of an installed distribution, e.g. in its
    ``pyproject.toml``: ``[project.entry-points."varpro_surrogates.problems"]
    my_model = "my_package.model:MyModel"``;
``my_package.model:MyModel``
    a module importable from ``sys.path`` and a class in it;
``path/to/file.py:MyModel``
    a Python file (relative to the working directory, or absolute) and a class in it. The
    file is loaded under a module name unique to its path and content
    (``_varpro_plugin_<stem>_<hash>``); it may import installed packages, not its
    neighbours (a plugin of several files is a package: use ``module:Class``).

Optional facts, with their fallbacks (:meth:`Problem.describe` reads and checks them):

==========================  ======================================  ========================
attribute                   meaning                                 fallback
==========================  ======================================  ========================
``parameter_names``         n_parameters strings (attribute or      ``y0, y1, ...``
                            zero-argument method)
``observable_coords()``     {name: (n_observables,) array}          none (``{}``)
``parameter_bounds``        (n_parameters, 2) rows (low, high) of   none: the box is taken
                            the parameter box (attribute/method)    from the training data
``periodic_parameters``     {index: period}, e.g. ``{2: pi}``       none (``{}``)
``default_split``           (train, validation, test) fractions     :data:`DEFAULT_SPLIT`
                                                                    = (0.8, 0.1, 0.1)
``training_hints``          {"standardize_inputs": bool,            the trainer's defaults
                            "center_targets": bool,                 (``None``); periodic
                            "periodic_inputs": bool}                encoding on if declared
``default_samples``         int: generate-dataset's --samples       --samples is required
                            default (class attribute)
``memory_estimate``         classmethod/staticmethod               none (no check)
                            ``(comm_size, **settings) -> bytes``
                            per process, checked before building
``check_parameters(y)``     validates one y (raises ValueError)     finite vector of length
                                                                    n_parameters
class docstring             first line = help text                  "<Class> (no docstring)"
==========================  ======================================  ========================

The default split (0.8, 0.1, 0.1) is the common machine-learning convention and DCR's SPEC 3
ratio; a dataset records the split it was made with, so training uses that record.

Every contract violation is a :class:`PluginError` (an :class:`~solvers.errors.InputError`)
whose one-line message names the problem and the plugin spec; a wrong observable (shape,
dtype, NaN/inf) is a :class:`PluginOutputError` (a :class:`~solvers.errors.SolveError`) that
also names the sample. Provenance (:class:`ProblemIdentity`) records the import path, the
file's SHA-256 (file and module plugins) or the distribution and its version (entry points,
installed packages, the package's own problems), and :func:`identity_changes` says what
differs between a recorded and a current plugin.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from solvers.common.atomic import sha256_file
from solvers.common.memory import check_memory
from solvers.common.validation import check_vector
from solvers.errors import InputError, SolveError, SolverSettingsError
from solvers.facts import TRAINING_HINT_KEYS, ProblemFacts, class_facts, facts_record

#: entry-point group through which installed distributions register problems
ENTRY_POINT_GROUP = "varpro_surrogates.problems"

#: split fractions (train, validation, test) of a problem that declares none
DEFAULT_SPLIT: tuple[float, float, float] = (0.8, 0.1, 0.1)

#: attributes every problem instance has (class or instance attributes)
REQUIRED_ATTRIBUTES: tuple[str, ...] = ("name", "n_parameters", "n_observables")

#: methods every problem class defines
REQUIRED_METHODS: tuple[str, ...] = ("solve", "settings", "sample_parameters")


#: the distribution that ships the registered problems
PACKAGE_DISTRIBUTION = "varpro-surrogates"

#: the ways a spec can name a problem (ProblemIdentity.kind)
KINDS: tuple[str, ...] = ("registered", "entry_point", "module", "file")

#: longest exception text quoted in a one-line message
_MAX_QUOTE = 300


class PluginError(InputError):
    """A problem plugin cannot be used (import, class, constructor, contract); one line."""


class PluginOutputError(SolveError):
    """A problem returned unusable observables for one sample (shape, dtype or NaN/inf).

    Attributes
    ----------
    kind : {"shape", "dtype", "nonfinite"}
        What was wrong; "shape" and "dtype" break the contract, "nonfinite" may be a
        numerical failure of that sample.
    """

    def __init__(self, reason: str, *, sample: int | None, kind: str):
        self.kind = kind
        super().__init__(reason, sample=sample)


def one_line(exc: BaseException) -> str:
    """``"Type: message"`` of an exception on one line (whitespace collapsed, shortened)."""
    text = " ".join(str(exc).split())
    if len(text) > _MAX_QUOTE:
        text = text[:_MAX_QUOTE - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------- identity
@dataclass(frozen=True)
class ProblemIdentity:
    """Where a problem's code came from (provenance).

    Attributes
    ----------
    spec : str
        The spec as given (``"dcr"``, ``"pkg.mod:Cls"``, ``"path/file.py:Cls"``, ...).
    kind : {"registered", "entry_point", "module", "file"}
        How the spec was resolved.
    import_path : str
        ``"module:Class"``; for a file plugin ``"/absolute/path.py:Class"``.
    class_name : str
        The class's qualified name.
    file : str or None
        Absolute path of the file defining the class, if known.
    sha256 : str or None
        Hex SHA-256 of that file (file and module plugins).
    distribution, version : str or None
        The installed distribution that provides the class and its version (entry points,
        installed packages, the package's own problems).
    """

    spec: str
    kind: str
    import_path: str
    class_name: str
    file: str | None = None
    sha256: str | None = None
    distribution: str | None = None
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form, as stored in provenance records."""
        return {"spec": self.spec, "kind": self.kind, "import_path": self.import_path,
                "class_name": self.class_name, "file": self.file, "sha256": self.sha256,
                "distribution": self.distribution, "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProblemIdentity:
        """Inverse of :meth:`as_dict` (missing optional keys are None)."""
        try:
            return cls(spec=str(data["spec"]), kind=str(data["kind"]),
                       import_path=str(data["import_path"]),
                       class_name=str(data["class_name"]),
                       **{k: data.get(k) for k in ("file", "sha256", "distribution",
                                                   "version")})
        except (KeyError, TypeError) as exc:
            raise PluginError(f"malformed problem provenance record {dict(data)!r}: "
                              f"{one_line(exc)}") from None

    @property
    def resolvable_spec(self) -> str:
        """A spec that resolves to the same code from any working directory."""
        return self.import_path if self.kind in ("module", "file") else self.spec


def identity_changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between a recorded problem and the current one, one phrase per change.

    Parameters
    ----------
    recorded, current : mapping
        :meth:`ProblemInfo.provenance` dicts (identity fields plus ``"settings"``).

    Returns
    -------
    list of str
        Empty if the same code with the same settings would run; otherwise e.g.
        ``["the plugin file's SHA-256 (3f2a9c01... -> 77b0e4d2...)", "setting n_cells
        (12 -> 24)"]``. A file plugin that moved but kept its content is the same plugin.
    """
    changes: list[str] = []

    def differ(key: str, what: str, short: bool = False) -> None:
        old, new = recorded.get(key), current.get(key)
        if old is not None and new is not None and old != new:
            fmt = (lambda v: f"{str(v)[:8]}...") if short else repr
            changes.append(f"{what} ({fmt(old)} -> {fmt(new)})")

    differ("kind", "the way the problem is named")
    if recorded.get("kind") == current.get("kind") == "file":
        differ("class_name", "the class")
    else:
        differ("import_path", "the import path")
    differ("sha256", "the plugin file's SHA-256", short=True)
    differ("distribution", "the distribution")
    differ("version", f"the version of {current.get('distribution') or 'its distribution'}")
    changes.extend(_settings_changes(recorded.get("settings") or {},
                                     current.get("settings") or {}))
    return changes


class PluginChangedError(PluginError):
    """The plugin that would re-solve a model's problem is not the one that made its data."""


#: the option that accepts a changed plugin, named in :class:`PluginChangedError` messages
ALLOW_CHANGED_OPTION = "--allow-changed-plugin"


def recorded_spec(problem: str, plugin: Mapping[str, Any] | None) -> str:
    """The spec that resolves the problem a provenance record names: the recorded plugin's
    (:attr:`ProblemIdentity.resolvable_spec`: a file plugin by its absolute path), else the
    problem name (data made before problems were plugins: a registered name)."""
    if plugin:
        return ProblemIdentity.from_dict(plugin).resolvable_spec
    return problem


def check_unchanged(plugin: Mapping[str, Any] | None, settings: Mapping[str, Any],
                    info: ProblemInfo, *, allow: bool = False,
                    option: str = ALLOW_CHANGED_OPTION, what: str = "the training data"
                    ) -> list[str]:
    """Refuse a problem whose code or settings differ from the recorded ones.

    Parameters
    ----------
    plugin : mapping or None
        The recorded identity (a dataset configuration's ``plugin``); None (data made before
        problems were plugins) checks nothing.
    settings : mapping
        The recorded settings.
    info : ProblemInfo
        The problem as built now.
    allow : bool
        Return the changes instead of raising.
    option, what : str
        Named in the message.

    Returns
    -------
    list of str
        What changed (:func:`identity_changes`); empty if nothing did.

    Raises
    ------
    PluginChangedError
        Something changed and ``allow`` is False (one line naming every change).
    """
    if not plugin:
        return []
    changes = identity_changes({**plugin, "settings": dict(settings)}, info.provenance())
    if changes and not allow:
        raise PluginChangedError(
            f"{info.label} is not the plugin that made {what}: {'; '.join(changes)}; pass "
            f"{option} to use it anyway")
    return changes


def _settings_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(f"setting {key} removed (was {old[key]!r})")
        elif key not in old:
            out.append(f"setting {key} added ({new[key]!r})")
        elif _json(old[key]) != _json(new[key]):
            out.append(f"setting {key} ({old[key]!r} -> {new[key]!r})")
    return out


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


# ---------------------------------------------------------------------- resolution
def available_problems() -> dict[str, str]:
    """Problem names usable as specs: registered ones, then installed entry points.

    Returns
    -------
    dict
        ``{name: "module:Class"}``; a registered name shadows an entry point of that name.
    """
    from solvers import SOLVERS

    found = {ep.name: ep.value for ep in _entry_points()}
    found.update(SOLVERS)
    return found


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


#: how a command's --help describes the problem argument
SPEC_HELP = ("a registered name or installed entry point (listed below), package.module:Class "
             "or path/to/file.py:Class (a problem plugin: docs/own-model.md)")


def problems_help() -> str:
    """The ``--help`` epilog listing the problems a spec can name: the registered ones with
    their help text (from their light facts, no solver loaded), then the entry points of
    :data:`ENTRY_POINT_GROUP` (not loaded: their ``module:Class``)."""
    from solvers import SOLVERS
    from solvers.facts import registered_facts

    lines = ["problems:"]
    for name in SOLVERS:
        try:
            facts = registered_facts(name)
            text = facts.help if facts is not None else SOLVERS[name]
        except Exception:  # noqa: BLE001 - a listing never fails: show where it lives
            text = SOLVERS[name]
        lines.append(f"  {name:<10} {text}")
    for ep in _entry_points():
        if ep.name not in SOLVERS:
            lines.append(f"  {ep.name:<10} {ep.value} (entry point of {ENTRY_POINT_GROUP})")
    lines.append("  MODULE:CLASS or FILE.py:CLASS  your own problem class (docs/own-model.md)")
    return "\n".join(lines)


def resolve_problem(spec: str) -> Problem:
    """Resolve a problem spec to its class and identity (no construction, no solve).

    Parameters
    ----------
    spec : str
        A registered name, an entry-point name, ``package.module:Class`` or
        ``path/to/file.py:Class`` (module docstring).

    Returns
    -------
    Problem

    Raises
    ------
    PluginError
        Unknown name, import failure, missing class, not a class, missing methods.
    """
    from solvers import SOLVERS

    if not isinstance(spec, str) or not spec.strip():
        raise PluginError(f"a problem must be a name or module:Class or file.py:Class, "
                          f"got {spec!r}")
    spec = spec.strip()
    if spec in SOLVERS:
        return _registered(spec, SOLVERS[spec])
    eps = [ep for ep in _entry_points() if ep.name == spec]
    if eps:
        return _from_entry_point(spec, eps[0])
    where, sep, attr = spec.rpartition(":")
    if not sep:
        raise PluginError(
            f"unknown problem {spec!r}: not one of {sorted(available_problems())}; give a "
            f"registered name, an entry point of {ENTRY_POINT_GROUP!r}, package.module:Class "
            "or path/to/file.py:Class")
    if not where or not attr:
        raise PluginError(f"problem {spec!r}: expected package.module:Class or "
                          "path/to/file.py:Class")
    if where.endswith(".py") or "/" in where or "\\" in where:
        return _from_file(spec, where, attr)
    return _from_module(spec, where, attr)


def _registered(spec: str, target: str) -> Problem:
    module_name, _, attr = target.partition(":")
    label = f"problem {spec!r}"
    module = importlib.import_module(module_name)  # the package's own: a failure is a bug
    cls = _get_class(module, attr, label, module_name)
    dist, version = _package_version(PACKAGE_DISTRIBUTION)
    identity = ProblemIdentity(spec, "registered", target, cls.__qualname__,
                               _source_file(cls), None, dist, version)
    return Problem(spec, spec, cls, identity)


def _from_entry_point(spec: str, ep: importlib.metadata.EntryPoint) -> Problem:
    label = f"problem {spec!r} (entry point {ep.value!r} of {ENTRY_POINT_GROUP})"
    try:
        cls = ep.load()
    except Exception as exc:
        raise PluginError(f"{label}: cannot load: {one_line(exc)}") from None
    _check_is_class(cls, label, ep.value)
    dist = getattr(ep, "dist", None)
    identity = ProblemIdentity(spec, "entry_point", ep.value, cls.__qualname__,
                               _source_file(cls), None, dist.name if dist else None,
                               dist.version if dist else None)
    return Problem(spec, spec, cls, identity)


def _from_module(spec: str, module_name: str, attr: str) -> Problem:
    label = f"plugin {spec!r}"
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise PluginError(f"{label}: {module_name!r} is not a module name; a file path must "
                          "end in .py")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"{label}: cannot import module {module_name!r}: "
                          f"{one_line(exc)}") from None
    except SystemExit as exc:
        raise PluginError(f"{label}: importing {module_name!r} called sys.exit({exc.code!r})"
                          ) from None
    cls = _get_class(module, attr, label, module_name)
    file = _source_file(cls)
    dist, version = _module_distribution(module_name)
    identity = ProblemIdentity(spec, "module", f"{module_name}:{attr}", cls.__qualname__,
                               file, _sha256(file), dist, version)
    return Problem(_default_name(cls), spec, cls, identity)


def _from_file(spec: str, where: str, attr: str) -> Problem:
    label = f"plugin {spec!r}"
    path = Path(where).expanduser()
    try:
        path = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise PluginError(f"{label}: file {where} not found (relative paths start at the "
                          f"working directory {Path.cwd()})") from None
    if not path.is_file():
        raise PluginError(f"{label}: {where} is not a file")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise PluginError(f"{label}: cannot read {where}: {exc.strerror or exc}") from None
    module = _load_file(path, digest, label)
    cls = _get_class(module, attr, label, where)
    identity = ProblemIdentity(spec, "file", f"{path}:{attr}", cls.__qualname__, str(path),
                               digest, None, None)
    return Problem(_default_name(cls), spec, cls, identity)


def _load_file(path: Path, digest: str, label: str) -> ModuleType:
    """Import ``path`` under a module name unique to its path and content (cached)."""
    stem = re.sub(r"\W", "_", path.stem)
    key = hashlib.sha256(f"{path}\0{digest}".encode()).hexdigest()[:16]
    name = f"_varpro_plugin_{stem}_{key}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{label}: {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PluginError(f"{label}: cannot import {path}: {one_line(exc)}") from None
    except SystemExit as exc:
        del sys.modules[name]
        raise PluginError(f"{label}: importing {path} called sys.exit({exc.code!r})") from None
    return module


def _get_class(module: ModuleType, attr: str, label: str, where: str) -> type:
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            classes = sorted(k for k, v in vars(module).items()
                             if inspect.isclass(v) and v.__module__ == module.__name__)
            raise PluginError(f"{label}: {where} has no class {attr!r} (classes defined "
                              f"there: {', '.join(classes) or 'none'})")
        obj = getattr(obj, part)
    _check_is_class(obj, label, attr)
    return obj


def _check_is_class(obj: Any, label: str, attr: str) -> None:
    if not inspect.isclass(obj):
        raise PluginError(f"{label}: {attr!r} is a {type(obj).__name__}, not a class "
                          "constructed as Cls(comm, **settings)")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise PluginError(f"{label}: class {obj.__name__} lacks "
                          f"{', '.join(m + '()' for m in missing)}, required by the problem "
                          "contract (solvers.base.PDESolver)")


def _source_file(cls: type) -> str | None:
    try:
        file = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None
    return str(Path(file).resolve()) if file else None


def _sha256(file: str | None) -> str | None:
    if file is None:
        return None
    try:
        return sha256_file(file)
    except OSError:
        return None


def _package_version(name: str) -> tuple[str | None, str | None]:
    try:
        return name, importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None, None


def _module_distribution(module_name: str) -> tuple[str | None, str | None]:
    """The installed distribution providing ``module_name``'s top-level package, if any."""
    top = module_name.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top) or []
    return _package_version(names[0]) if names else (None, None)


def _default_name(cls: type) -> str:
    name = getattr(cls, "name", None)
    return name if isinstance(name, str) and name else cls.__name__.lower()


# ---------------------------------------------------------------------- the problem
@dataclass(frozen=True)
class Problem:
    """A resolved problem: its class and where it came from (nothing constructed yet).

    Attributes
    ----------
    name : str
        Problem name: the registered or entry-point name, else the class's ``name``
        attribute (its lower-cased class name if that is not a class attribute).
    spec : str
        The spec as given.
    cls : type
        The problem class.
    identity : ProblemIdentity
    """

    name: str
    spec: str
    cls: type
    identity: ProblemIdentity

    @property
    def label(self) -> str:
        """How messages name the problem: ``problem 'x'`` or ``problem 'x' (plugin spec)``."""
        if self.identity.kind == "registered":
            return f"problem {self.name!r}"
        return f"problem {self.name!r} (plugin {self.spec!r})"

    @property
    def facts(self) -> ProblemFacts:
        """The static facts the class declares (:mod:`solvers.facts`; a registered problem's
        from its registered facts)."""
        if self.identity.kind == "registered":
            from solvers.facts import registered_facts

            facts = registered_facts(self.name)
            if facts is not None:
                return facts
        return class_facts(self.cls, self.name)

    @property
    def help(self) -> str:
        """One line of help: the registered facts' help text, else the first line of the
        class docstring."""
        return self.facts.help

    def valid_settings(self) -> list[str] | None:
        """Setting names the constructor accepts; None if it takes any (``**settings``).

        A ``DEFAULTS`` dict on the class, or in its module for the registered problems,
        lists them; otherwise the constructor's keyword parameters do.
        """
        defaults = getattr(self.cls, "DEFAULTS", None)
        if not isinstance(defaults, dict) and self.identity.kind == "registered":
            defaults = getattr(sys.modules.get(self.cls.__module__), "DEFAULTS", None)
        if isinstance(defaults, dict):
            return sorted(defaults)
        try:
            params = list(inspect.signature(self.cls).parameters.values())
        except (TypeError, ValueError):
            return None
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return sorted(p.name for p in params[1:]
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Refuse (SolverSettingsError) setting names the constructor does not take."""
        valid = self.valid_settings()
        unknown = sorted(set(settings) - set(valid)) if valid is not None else []
        if not unknown:
            return
        if self.identity.kind == "registered":  # the message make_solver has always given
            raise SolverSettingsError(f"unknown {self.name.upper()} setting(s) {unknown}; "
                                      f"valid: {valid}")
        raise SolverSettingsError(f"{self.label}: unknown setting(s) {unknown}; valid: {valid}")

    def memory_estimate(self, comm_size: int = 1, **settings: Any) -> float | None:
        """Bytes per process the class's ``memory_estimate(comm_size, **settings)`` predicts,
        or None if it declares none."""
        fn = getattr(self.cls, "memory_estimate", None)
        if fn is None:
            return None
        try:
            value = float(fn(comm_size, **settings))
        except InputError:
            raise
        except Exception as exc:
            raise PluginError(f"{self.label}: memory_estimate() raised "
                              f"{one_line(exc)}") from None
        if not math.isfinite(value) or value < 0:
            raise PluginError(f"{self.label}: memory_estimate() returned {value!r}, expected "
                              "bytes >= 0")
        return value

    def build(self, comm: Any = None, **settings: Any) -> Any:
        """Construct the problem on ``comm`` (default COMM_SELF) and check its contract.

        Unknown setting names and a predicted memory that does not fit are refused first
        (SolverSettingsError). For the registered problems any error of the constructor
        propagates unchanged (as from :func:`solvers.make_solver`); for plugins it becomes a
        :class:`PluginError` naming the plugin.

        Returns
        -------
        object
            The problem instance (a :class:`~solvers.base.PDESolver`).
        """
        self.check_settings(settings)
        if comm is None:
            from solvers.common.mpi_network import init_mpi

            comm = init_mpi().COMM_SELF  # loopback MPI for single-node runs
        estimate = self.memory_estimate(comm.size, **settings)
        if estimate is not None:
            check_memory(estimate, f"{self.label} with settings {settings}")
        if self.identity.kind == "registered":
            solver = self.cls(comm, **settings)
        else:
            solver = self._construct(comm, settings)
        check_instance(solver, self.label)
        return solver

    def _construct(self, comm: Any, settings: dict[str, Any]) -> Any:
        try:
            return self.cls(comm, **settings)
        except (ValueError, TypeError) as exc:
            raise PluginError(f"{self.label}: invalid settings {settings}: "
                              f"{one_line(exc)}") from None
        except Exception as exc:
            raise PluginError(f"{self.label}: constructor raised {one_line(exc)}") from None

    def describe(self, solver: Any) -> ProblemInfo:
        """Every per-problem fact of a built instance, with the fallbacks filled in.

        Raises
        ------
        PluginError
            An optional fact is declared but malformed (wrong length, bad box, ...).
        """
        check_instance(solver, self.label)
        n, m = int(solver.n_parameters), int(solver.n_observables)
        return ProblemInfo(
            name=str(solver.name), label=self.label, help=self.help, n_parameters=n,
            n_observables=m, parameter_names=_parameter_names(solver, n, self.label),
            observable_coords=_observable_coords(solver, m, self.label),
            parameter_box=_parameter_box(solver, n, self.label),
            periodic_parameters=_periodic(solver, n, self.label),
            split_fractions=_split(solver, self.label),
            training_hints=_hints(solver, self.label),
            settings=checked_settings(solver, self.label), identity=self.identity)


@dataclass(frozen=True)
class ProblemInfo:
    """The per-problem facts of a built problem, fallbacks filled in.

    Attributes
    ----------
    name, label, help : str
        Problem name (the instance's ``name``), how messages name it, one-line help.
    n_parameters, n_observables : int
    parameter_names : tuple of str
        Length n_parameters.
    observable_coords : dict
        {coordinate name: (n_observables,) array}; empty if none declared.
    parameter_box : numpy.ndarray or None
        (n_parameters, 2) rows (low, high), or None if not declared.
    periodic_parameters : dict
        {parameter index: period > 0}.
    split_fractions : (float, float, float)
        Default train/validation/test fractions.
    training_hints : dict
        {key of TRAINING_HINT_KEYS: bool or None (the trainer's default)}.
    settings : dict
        The instance's ``settings()`` (JSON-serialisable).
    identity : ProblemIdentity
    """

    name: str
    label: str
    help: str
    n_parameters: int
    n_observables: int
    parameter_names: tuple[str, ...]
    observable_coords: dict[str, np.ndarray]
    parameter_box: np.ndarray | None
    periodic_parameters: dict[int, float]
    split_fractions: tuple[float, float, float]
    training_hints: dict[str, bool | None]
    settings: dict[str, Any]
    identity: ProblemIdentity = field(repr=False)

    def provenance(self) -> dict[str, Any]:
        """JSON record of the code and settings: identity fields plus ``"settings"``."""
        return {**self.identity.as_dict(), "problem": self.name,
                "settings": json.loads(json.dumps(self.settings))}

    def facts_record(self) -> dict[str, Any]:
        """The facts training needs, as JSON (:func:`solvers.facts.facts_record`): periodic
        parameters, default split, training hints."""
        return facts_record(self.periodic_parameters, self.split_fractions,
                            self.training_hints)


# ---------------------------------------------------------------------- contract checks
def check_instance(solver: Any, label: str) -> None:
    """Refuse (PluginError) an instance without a str ``name`` or with ``n_parameters`` /
    ``n_observables`` that are not integers >= 1."""
    cls = type(solver).__name__
    for attr in REQUIRED_ATTRIBUTES:
        if not hasattr(solver, attr):
            what = "a str" if attr == "name" else "an int >= 1"
            raise PluginError(f"{label}: {cls} has no attribute {attr!r} ({what}), required "
                              "by the problem contract (solvers.base.PDESolver)")
    if not isinstance(solver.name, str) or not solver.name:
        raise PluginError(f"{label}: {cls}.name must be a non-empty str, got {solver.name!r}")
    for attr in ("n_parameters", "n_observables"):
        value = getattr(solver, attr)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise PluginError(f"{label}: {cls}.{attr} must be an int >= 1, got {value!r}")


def checked_settings(solver: Any, label: str) -> dict[str, Any]:
    """``solver.settings()``, refused (PluginError) unless a JSON-serialisable dict with
    string keys and finite numbers; the message names the first offending key."""
    try:
        settings = solver.settings()
    except Exception as exc:
        raise PluginError(f"{label}: settings() raised {one_line(exc)}") from None
    if not isinstance(settings, dict):
        raise PluginError(f"{label}: settings() must return a dict, got "
                          f"{type(settings).__name__}")
    for key, value in settings.items():
        if not isinstance(key, str):
            raise PluginError(f"{label}: settings() key {key!r} is not a str")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise PluginError(f"{label}: settings() is not JSON-serialisable: setting {key!r} "
                              f"= {_short_repr(value)} ({one_line(exc)})") from None
    return settings


def _short_repr(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _optional(solver: Any, attr: str, label: str) -> Any:
    """The optional fact ``attr`` (an attribute, or a method called without arguments)."""
    value = getattr(solver, attr, None)
    if callable(value):
        try:
            value = value()
        except Exception as exc:
            raise PluginError(f"{label}: {attr}() raised {one_line(exc)}") from None
    return value


def _parameter_names(solver: Any, n: int, label: str) -> tuple[str, ...]:
    names = _optional(solver, "parameter_names", label)
    if names is None:
        return tuple(f"y{k}" for k in range(n))
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise PluginError(f"{label}: parameter_names must be a list of {n} str, got "
                          f"{_short_repr(names)}")
    names = tuple(names)
    if len(names) != n or not all(isinstance(s, str) and s for s in names):
        raise PluginError(f"{label}: parameter_names must be {n} non-empty str "
                          f"(n_parameters), got {_short_repr(names)}")
    if len(set(names)) != n:
        raise PluginError(f"{label}: parameter_names repeat a name: {_short_repr(names)}")
    return names


def _observable_coords(solver: Any, m: int, label: str) -> dict[str, np.ndarray]:
    coords = _optional(solver, "observable_coords", label)
    if coords is None:
        return {}
    if not isinstance(coords, Mapping):
        raise PluginError(f"{label}: observable_coords() must return a dict of arrays, got "
                          f"{type(coords).__name__}")
    out = {}
    for key, value in coords.items():
        arr = np.asarray(value)
        if not isinstance(key, str) or arr.shape != (m,) or arr.dtype.kind not in "iufUSb":
            raise PluginError(f"{label}: observable_coords()[{key!r}] must be numbers or str "
                              f"of shape ({m},) (n_observables), got shape {arr.shape} dtype "
                              f"{arr.dtype}")
        out[key] = arr
    return out


def _parameter_box(solver: Any, n: int, label: str) -> np.ndarray | None:
    box = _optional(solver, "parameter_bounds", label)
    if box is None:
        return None
    try:
        arr = np.array(box, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape != (n, 2) or not np.isfinite(arr).all() or np.any(arr[:, 0] >= arr[:, 1]):
        raise PluginError(f"{label}: parameter_bounds must be {n} finite rows (low, high) with "
                          f"low < high, got {_short_repr(box)}")
    return arr


def _periodic(solver: Any, n: int, label: str) -> dict[int, float]:
    declared = _optional(solver, "periodic_parameters", label)
    if declared is None:
        return {}
    if not isinstance(declared, Mapping):
        raise PluginError(f"{label}: periodic_parameters must be a dict {{index: period}}, "
                          f"got {_short_repr(declared)}")
    out = {}
    for key, period in declared.items():
        try:
            k = int(key)
            p = float(period)
            ok = str(key).strip().lstrip("-").isdigit() and 0 <= k < n and math.isfinite(p) \
                and p > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise PluginError(f"{label}: periodic_parameters entry {key!r}: {period!r} must map "
                              f"a parameter index in [0, {n - 1}] to a period > 0")
        out[k] = p
    return out


def _split(solver: Any, label: str) -> tuple[float, float, float]:
    split = _optional(solver, "default_split", label)
    if split is None:
        return DEFAULT_SPLIT
    try:
        values = tuple(float(v) for v in split)
    except (TypeError, ValueError):
        values = ()
    if (len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values)
            or sum(values) > 1 + 1e-9 or values[0] == 0):
        raise PluginError(f"{label}: default_split must be 3 fractions (train, validation, "
                          f"test) >= 0 with train > 0 and sum <= 1, got {_short_repr(split)}")
    return values


def _hints(solver: Any, label: str) -> dict[str, bool | None]:
    hints = _optional(solver, "training_hints", label)
    out: dict[str, bool | None] = dict.fromkeys(TRAINING_HINT_KEYS)
    if hints is None:
        return out
    if not isinstance(hints, Mapping):
        raise PluginError(f"{label}: training_hints must be a dict, got {_short_repr(hints)}")
    for key, value in hints.items():
        if key not in TRAINING_HINT_KEYS:
            raise PluginError(f"{label}: unknown training hint {key!r}; valid: "
                              f"{list(TRAINING_HINT_KEYS)}")
        if value is not None and not isinstance(value, bool | np.bool_):
            raise PluginError(f"{label}: training hint {key} must be true, false or None, got "
                              f"{value!r}")
        out[key] = None if value is None else bool(value)
    return out


def check_parameters(solver: Any, y: Any, name: str = "y") -> np.ndarray:
    """Validate one parameter vector: the problem's ``check_parameters`` if it has one, else
    a finite float64 vector of length n_parameters (InputError otherwise).

    Returns
    -------
    numpy.ndarray
        Shape (n_parameters,), float64.
    """
    own = getattr(solver, "check_parameters", None)
    if callable(own):
        return np.asarray(own(y), dtype=np.float64)
    return check_vector(y, int(solver.n_parameters), name)


# ---------------------------------------------------------------------- per-sample helpers
def check_output(problem: ProblemInfo, c: Any, sample: int | None) -> np.ndarray:
    """The observables a solve returned, checked and converted to float64.

    Parameters
    ----------
    problem : ProblemInfo
        The problem that produced them (its n_observables and label).
    c : array_like
        What ``solve`` returned; must be real numbers (integer or floating dtype) of shape
        (n_observables,), all finite.
    sample : int or None
        The sample index, named in the message.

    Returns
    -------
    numpy.ndarray
        Shape (n_observables,), float64.

    Raises
    ------
    PluginOutputError
        One line naming the sample, the problem and what is wrong (``kind`` "shape",
        "dtype" or "nonfinite").
    """
    where = f"{problem.label}, solve()"
    try:
        arr = np.asarray(c)
    except Exception as exc:
        raise PluginOutputError(f"{where} returned {type(c).__name__}, not an array "
                                f"({one_line(exc)})", sample=sample, kind="dtype") from None
    if arr.dtype.kind not in "iuf":
        raise PluginOutputError(f"{where} returned dtype {arr.dtype}; observables must be real "
                                "numbers (float or integer)", sample=sample, kind="dtype")
    if arr.shape != (problem.n_observables,):
        raise PluginOutputError(f"{where} returned shape {arr.shape}, expected "
                                f"({problem.n_observables},) (n_observables)", sample=sample,
                                kind="shape")
    arr = arr.astype(np.float64, copy=arr.dtype != np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise PluginOutputError(f"{where} returned non-finite observables: c[{bad[0]}] = "
                                f"{arr[bad[0]]} ({bad.size} such entries)", sample=sample,
                                kind="nonfinite")
    return arr


def default_sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of a dataset with seed ``seed``: ``default_rng([seed,
    index])``, the same stream as :func:`datasets.sampling.sample_rng` (kept here so that
    this layer does not import datasets)."""
    return np.random.default_rng([int(seed), int(index)])


def check_deterministic_sampler(solver: Any, seed: int, index: int = 0, *,
                                label: str | None = None,
                                rng: Callable[[int, int], np.random.Generator]
                                = default_sample_rng) -> np.ndarray:
    """Draw sample ``index``'s parameters twice from fresh equal generators; refuse a sampler
    that gives different values (it must draw only from the generator it is given).

    Parameters
    ----------
    solver : PDESolver
        The built problem.
    seed, index : int
        Dataset seed and sample index whose draw is repeated.
    label : str, optional
        How to name the problem (default: its ``name``).
    rng : callable
        ``rng(seed, index)`` -> the sample's generator.

    Returns
    -------
    numpy.ndarray
        The draw, shape (n_parameters,), float64.

    Raises
    ------
    PluginError
        The sampler raised, returned a wrong shape or non-finite values, or is not
        deterministic (naming the first differing entry).
    """
    label = label or f"problem {getattr(solver, 'name', type(solver).__name__)!r}"
    n = int(solver.n_parameters)
    draws = []
    for _ in range(2):
        try:
            y = solver.sample_parameters(rng(seed, index))
        except Exception as exc:
            raise PluginError(f"{label}: sample_parameters() raised {one_line(exc)} (seed "
                              f"{seed}, sample {index})") from None
        try:
            draws.append(check_vector(y, n, "sample_parameters()"))
        except InputError as exc:
            raise PluginError(f"{label}: {exc} (seed {seed}, sample {index})") from None
    a, b = draws
    if not np.array_equal(a, b):
        k = int(np.flatnonzero(a != b)[0])
        raise PluginError(
            f"{label}: sample_parameters() is not deterministic: seed {seed}, sample {index} "
            f"drew y[{k}] = {float(a[k])!r} and then {float(b[k])!r}; it must draw only from the "
            "rng it is given (no global or stored random state)")
    return a


__all__ = ["ALLOW_CHANGED_OPTION", "DEFAULT_SPLIT", "ENTRY_POINT_GROUP", "KINDS",
           "REQUIRED_ATTRIBUTES", "REQUIRED_METHODS", "SPEC_HELP", "TRAINING_HINT_KEYS",
           "PluginChangedError", "PluginError", "PluginOutputError", "Problem",
           "ProblemIdentity", "ProblemInfo", "available_problems", "check_instance",
           "check_deterministic_sampler", "check_output", "check_parameters",
           "check_unchanged", "checked_settings", "default_sample_rng", "identity_changes",
           "one_line", "problems_help", "recorded_spec", "resolve_problem"]
