"""Problem plugins: resolution (file, module, entry point, registered name), the contract
checks with their one-line errors, the per-sample output check and the sampler check."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from solvers.errors import InputError, SolveError, SolverSettingsError
from solvers.plugins import (
    DEFAULT_SPLIT,
    ENTRY_POINT_GROUP,
    PluginError,
    PluginOutputError,
    ProblemIdentity,
    available_problems,
    check_deterministic_sampler,
    check_output,
    check_parameters,
    identity_changes,
    resolve_problem,
)

#: a serial numpy problem written as a user would (ignores comm)
GOOD = '''
import numpy as np


class Quadratic:
    """A toy quadratic map y -> (y0^2, y0 y1, y1) for the plugin tests."""

    name = "quadratic"
    n_parameters = 2
    n_observables = 3

    def __init__(self, comm, *, scale=1.0):
        self.scale = float(scale)

    def solve(self, y, *, sample=None):
        y = np.asarray(y, dtype=float)
        return self.scale * np.array([y[0] ** 2, y[0] * y[1], y[1]])

    def settings(self):
        return {"scale": self.scale}

    def sample_parameters(self, rng):
        return rng.uniform([-1.0, 0.0], [1.0, 2.0])


class Described(Quadratic):
    """The same map, with every optional fact declared."""

    parameter_names = ("amplitude", "phase")
    parameter_bounds = ((-1.0, 1.0), (0.0, 2.0))
    periodic_parameters = {1: 2.0}
    default_split = (0.5, 0.25, 0.25)
    training_hints = {"center_targets": True, "periodic_inputs": False}

    def observable_coords(self):
        return {"kind": np.array(["square", "product", "linear"]), "order": np.array([2, 2, 1])}

    @classmethod
    def memory_estimate(cls, comm_size, *, scale=1.0):
        return 1e30 if scale > 100 else 1e6


def helper():
    return 1
'''


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def plugin_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write(tmp_path / "toy_model.py", GOOD)


def bad_plugin(tmp_path: Path, body: str, name: str = "bad_model.py") -> str:
    """Write a plugin file whose class ``Bad`` has ``body``; return its spec."""
    write(tmp_path / name, "import numpy as np\n\n" + textwrap.dedent(body))
    return f"{tmp_path / name}:Bad"


def assert_one_line(exc: BaseException, *parts: str) -> None:
    text = str(exc)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, (part, text)


# ---------------------------------------------------------------------- resolution
def test_a_file_plugin_resolves_by_relative_path_and_solves(plugin_file):
    problem = resolve_problem("toy_model.py:Quadratic")
    assert problem.name == "quadratic" and problem.cls.__name__ == "Quadratic"
    assert problem.help == "A toy quadratic map y -> (y0^2, y0 y1, y1) for the plugin tests."
    ident = problem.identity
    assert ident.kind == "file" and ident.spec == "toy_model.py:Quadratic"
    assert ident.import_path == f"{plugin_file.resolve()}:Quadratic"
    assert ident.sha256 == hashlib.sha256(plugin_file.read_bytes()).hexdigest()
    assert ident.file == str(plugin_file.resolve()) and ident.version is None
    solver = problem.build(scale=2.0)
    np.testing.assert_array_equal(solver.solve([1.0, 3.0]), [2.0, 6.0, 6.0])
    # the same file resolves to the same module and class; the module is not "toy_model"
    assert resolve_problem(f"{plugin_file}:Quadratic").cls is problem.cls
    assert problem.cls.__module__.startswith("_varpro_plugin_toy_model_")
    assert "toy_model" not in sys.modules


def test_fallbacks_of_a_problem_that_declares_nothing_optional(plugin_file):
    problem = resolve_problem("toy_model.py:Quadratic")
    info = problem.describe(problem.build())
    assert info.parameter_names == ("y0", "y1")
    assert info.observable_coords == {} and info.parameter_box is None
    assert info.periodic_parameters == {} and info.split_fractions == DEFAULT_SPLIT
    assert info.training_hints == {"standardize_inputs": None, "center_targets": None,
                                   "periodic_inputs": None}
    assert problem.memory_estimate(1) is None
    assert info.settings == {"scale": 1.0}
    record = info.provenance()
    assert record["problem"] == "quadratic" and record["settings"] == {"scale": 1.0}
    assert record["kind"] == "file" and json.loads(json.dumps(record)) == record


def test_declared_facts_are_read_and_checked(plugin_file):
    problem = resolve_problem("toy_model.py:Described")
    info = problem.describe(problem.build())
    assert info.parameter_names == ("amplitude", "phase")
    np.testing.assert_array_equal(info.parameter_box, [[-1, 1], [0, 2]])
    assert info.periodic_parameters == {1: 2.0}
    assert info.split_fractions == (0.5, 0.25, 0.25)
    assert info.training_hints == {"standardize_inputs": None, "center_targets": True,
                                   "periodic_inputs": False}
    assert list(info.observable_coords["kind"]) == ["square", "product", "linear"]
    assert problem.memory_estimate(1) == 1e6


def test_a_memory_estimate_that_cannot_fit_is_refused_before_construction(plugin_file):
    problem = resolve_problem("toy_model.py:Described")
    with pytest.raises(SolverSettingsError, match="needs about .* but only .* available"):
        problem.build(scale=1000.0)


def test_a_module_plugin_resolves_with_its_file_hash(tmp_path, monkeypatch):
    package = tmp_path / "mylab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = write(package / "models.py", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    problem = resolve_problem("mylab.models:Quadratic")
    ident = problem.identity
    assert ident.kind == "module" and ident.import_path == "mylab.models:Quadratic"
    assert ident.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert ident.distribution is None and ident.resolvable_spec == "mylab.models:Quadratic"
    assert problem.build().solve([2.0, 1.0]).tolist() == [4.0, 2.0, 1.0]


def test_an_installed_entry_point_resolves_by_name_with_its_version(tmp_path, monkeypatch):
    package = tmp_path / "labmodels"
    package.mkdir()
    write(package / "__init__.py", GOOD)
    info = tmp_path / "labmodels-2.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labmodels\nVersion: 2.3.1\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nlab_quadratic = labmodels:Quadratic\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert available_problems()["lab_quadratic"] == "labmodels:Quadratic"
    problem = resolve_problem("lab_quadratic")
    assert problem.name == "lab_quadratic"
    assert problem.label == "problem 'lab_quadratic' (plugin 'lab_quadratic')"
    ident = problem.identity
    assert (ident.kind, ident.import_path, ident.distribution, ident.version) == (
        "entry_point", "labmodels:Quadratic", "labmodels", "2.3.1")
    assert problem.build().n_observables == 3


def test_registered_problems_resolve_with_the_package_version():
    problem = resolve_problem("dcr")
    assert problem.identity.kind == "registered" and problem.cls.__name__ == "DCRSolver"
    assert problem.identity.distribution == "varpro-surrogates"
    assert problem.label == "problem 'dcr'"
    assert problem.valid_settings() is not None and "n_cells" in problem.valid_settings()
    with pytest.raises(SolverSettingsError, match=r"unknown DCR setting\(s\) \['bogus'\]"):
        problem.build(bogus=1)


def test_registered_problem_description_and_output_check():
    problem = resolve_problem("dcr")
    solver = problem.build(n_cells=[12, 12, 6], n_receivers=3)
    info = problem.describe(solver)
    assert info.parameter_names == ("depth", "size", "angle")
    np.testing.assert_array_equal(info.parameter_box, solver.parameter_bounds)
    assert set(info.observable_coords) == {"receiver_x1", "receiver_x2", "direction"}
    y = check_deterministic_sampler(solver, 0, 5)
    c = check_output(info, solver.solve(check_parameters(solver, y)), 5)
    assert c.shape == (18,) and c.dtype == np.float64


def test_an_unknown_name_lists_what_exists():
    with pytest.raises(PluginError, match=r"unknown problem 'nosuch': not one of \[.*'cdr'.*"
                                          r"'dcr'.*\]; give a registered name") as info:
        resolve_problem("nosuch")
    assert_one_line(info.value)


# ---------------------------------------------------------------------- contract violations
def test_import_errors_name_the_plugin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "broken.py", "def f(:\n    pass\n")
    with pytest.raises(PluginError) as info:
        resolve_problem("broken.py:Bad")
    assert_one_line(info.value, "plugin 'broken.py:Bad'", "cannot import", "SyntaxError")
    write(tmp_path / "needs.py", "import no_such_dependency_xyz\n")
    with pytest.raises(PluginError) as info:
        resolve_problem("needs.py:Bad")
    assert_one_line(info.value, "plugin 'needs.py:Bad'", "ModuleNotFoundError",
                    "no_such_dependency_xyz")
    write(tmp_path / "raises.py", "raise RuntimeError('no licence\\nserver')\n")
    with pytest.raises(PluginError) as info:
        resolve_problem("raises.py:Bad")
    assert_one_line(info.value, "RuntimeError: no licence server")
    with pytest.raises(PluginError) as info:
        resolve_problem("no_such_pkg_xyz.models:Bad")
    assert_one_line(info.value, "plugin 'no_such_pkg_xyz.models:Bad'", "cannot import module")
    with pytest.raises(PluginError) as info:
        resolve_problem("missing.py:Bad")
    assert_one_line(info.value, "plugin 'missing.py:Bad'", "file missing.py not found",
                    str(tmp_path))


def test_missing_class_and_not_a_class(plugin_file):
    with pytest.raises(PluginError) as info:
        resolve_problem("toy_model.py:Quadratik")
    assert_one_line(info.value, "plugin 'toy_model.py:Quadratik'", "no class 'Quadratik'",
                    "classes defined there: Described, Quadratic")
    with pytest.raises(PluginError) as info:
        resolve_problem("toy_model.py:helper")
    assert_one_line(info.value, "'helper' is a function, not a class")


@pytest.mark.parametrize("missing", ["solve", "settings", "sample_parameters"])
def test_a_missing_method_is_refused_at_resolution(tmp_path, missing):
    methods = {
        "solve": "    def solve(self, y, *, sample=None):\n        return np.zeros(1)\n",
        "settings": "    def settings(self):\n        return {}\n",
        "sample_parameters": "    def sample_parameters(self, rng):\n"
                             "        return rng.random(1)\n",
    }
    body = ("class Bad:\n    name = 'bad'\n    n_parameters = 1\n    n_observables = 1\n\n"
            "    def __init__(self, comm):\n        pass\n\n"
            + "\n".join(v for k, v in methods.items() if k != missing))
    spec = bad_plugin(tmp_path, body)
    with pytest.raises(PluginError) as info:
        resolve_problem(spec)
    assert_one_line(info.value, f"plugin '{spec}'", f"class Bad lacks {missing}()",
                    "problem contract")


BASE = """
class Bad:
    name = "bad"
    n_parameters = 1
    n_observables = 2

    def __init__(self, comm, **settings):
        self.extra = settings

    def solve(self, y, *, sample=None):
        return np.zeros(2)

    def settings(self):
        return dict(self.extra)

    def sample_parameters(self, rng):
        return rng.random(1)
"""


@pytest.mark.parametrize("patch, settings, error, parts", [
    ('    name = "bad"\n', {}, PluginError, ["has no attribute 'name' (a str)"]),
    ("    n_observables = 2\n", {}, PluginError,
     ["has no attribute 'n_observables' (an int >= 1)"]),
    ("    n_parameters = 1\n", {}, None, None),  # replaced below: 0 parameters
    ("        self.extra = settings\n", {"x": 1}, PluginError,
     ["constructor raised RuntimeError: licence expired"]),
    ("        return dict(self.extra)\n", {}, PluginError,
     ["settings() raised KeyError"]),
])
def test_broken_instances_are_refused_at_build(tmp_path, patch, settings, error, parts):
    replacements = {
        "    n_parameters = 1\n": "    n_parameters = 0\n",
        "        self.extra = settings\n": "        raise RuntimeError('licence\\nexpired')\n",
        "        return dict(self.extra)\n": "        return {}['x']\n",
    }
    source = BASE.replace(patch, replacements.get(patch, ""))
    spec = bad_plugin(tmp_path, source)
    problem = resolve_problem(spec)
    with pytest.raises(PluginError) as info:
        solver = problem.build(**settings)
        problem.describe(solver)
    if error is None:
        parts = ["Bad.n_parameters must be an int >= 1, got 0"]
    assert_one_line(info.value, f"problem 'bad' (plugin '{spec}')", *parts)


def test_constructor_value_errors_and_unknown_settings_name_the_plugin(tmp_path):
    spec = bad_plugin(tmp_path, BASE.replace(
        "        self.extra = settings\n",
        "        if settings.get('n', 1) < 1:\n"
        "            raise ValueError(f\"n must be >= 1, got {settings['n']}\")\n"
        "        self.extra = settings\n"))
    with pytest.raises(PluginError) as info:
        resolve_problem(spec).build(n=0)
    assert_one_line(info.value, f"(plugin '{spec}')", "invalid settings {'n': 0}",
                    "ValueError: n must be >= 1, got 0")
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
    strict = bad_plugin(tmp_path, BASE.replace("comm, **settings", "comm, *, a=1, b=2")
                        .replace("self.extra = settings", "self.extra = {'a': a, 'b': b}"),
                        name="strict.py")
    with pytest.raises(SolverSettingsError) as info:
        resolve_problem(strict).build(c=3)
    assert_one_line(info.value, f"(plugin '{strict}')", "unknown setting(s) ['c']",
                    "valid: ['a', 'b']")


@pytest.mark.parametrize("value, parts", [
    ("np.arange(3)", ["setting 'points' = array([0, 1, 2])", "ndarray is not JSON"]),
    ("float('nan')", ["setting 'points' = nan", "Out of range float"]),
    ("{1, 2}", ["setting 'points' = {1, 2}", "set is not JSON"]),
])
def test_settings_that_are_not_json_are_refused(tmp_path, value, parts):
    spec = bad_plugin(tmp_path, BASE.replace("return dict(self.extra)",
                                             f"return {{'ok': 1, 'points': {value}}}"))
    with pytest.raises(PluginError) as info:
        problem = resolve_problem(spec)
        problem.describe(problem.build())
    assert_one_line(info.value, f"(plugin '{spec}')", "settings() is not JSON-serialisable",
                    *parts)


@pytest.mark.parametrize("declaration, part", [
    ("parameter_names = ('a', 'b')", "parameter_names must be 1 non-empty str"),
    ("periodic_parameters = {3: 1.0}", "periodic_parameters entry 3: 1.0 must map a parameter "
                                       "index in [0, 0]"),
    ("periodic_parameters = {0: -1.0}", "to a period > 0"),
    ("parameter_bounds = ((1.0, 0.0),)", "parameter_bounds must be 1 finite rows"),
    ("default_split = (0.9, 0.2, 0.1)", "default_split must be 3 fractions"),
    ("training_hints = {'centre_targets': True}", "unknown training hint 'centre_targets'"),
    ("training_hints = {'center_targets': 'yes'}", "training hint center_targets must be true"),
    ("def observable_coords(self):\n        return {'x': np.zeros(5)}",
     "observable_coords()['x'] must be numbers or str of shape (2,)"),
])
def test_malformed_optional_facts_are_refused(tmp_path, declaration, part):
    spec = bad_plugin(tmp_path, BASE.replace('    name = "bad"\n',
                                             f'    name = "bad"\n    {declaration}\n'))
    problem = resolve_problem(spec)
    with pytest.raises(PluginError) as info:
        problem.describe(problem.build())
    assert_one_line(info.value, f"problem 'bad' (plugin '{spec}')", part)


# ---------------------------------------------------------------------- per-sample checks
@pytest.fixture
def info(plugin_file):
    problem = resolve_problem("toy_model.py:Quadratic")
    return problem.describe(problem.build())


def test_check_output_converts_real_numbers_to_float64(info):
    for c in ([1, 2, 3], np.array([1, 2, 3], dtype=np.float32), (0.5, 1.5, 2.5)):
        out = check_output(info, c, 0)
        assert out.dtype == np.float64 and out.shape == (3,)
        np.testing.assert_array_equal(out, np.asarray(c, dtype=np.float64))


@pytest.mark.parametrize("c, kind, part", [
    (np.zeros((3, 1)), "shape", "returned shape (3, 1), expected (3,) (n_observables)"),
    (np.zeros(4), "shape", "returned shape (4,), expected (3,)"),
    (5.0, "shape", "returned shape (), expected (3,)"),
    (np.ones(3, dtype=complex), "dtype", "returned dtype complex128; observables must be real"),
    (np.array([True, False, True]), "dtype", "returned dtype bool"),
    ([1.0, "x", 2.0], "dtype", "returned dtype <U32"),
    (None, "dtype", "returned dtype object"),
    (np.array([1.0, np.nan, np.inf]), "nonfinite", "non-finite observables: c[1] = nan "
                                                    "(2 such entries)"),
])
def test_check_output_refuses_bad_observables(info, c, kind, part):
    with pytest.raises(PluginOutputError) as exc:
        check_output(info, c, 17)
    err = exc.value
    assert isinstance(err, SolveError) and err.kind == kind and err.sample == 17
    assert_one_line(err, "sample 17: problem 'quadratic' (plugin 'toy_model.py:Quadratic'), "
                         "solve()", part)


SAMPLERS = {
    "global": "return np.random.random(1)",
    "stored": "self.__dict__.setdefault('rng', np.random.default_rng(0))\n"
              "        return self.rng.random(1)",
    "counter": "self.__dict__['k'] = self.__dict__.get('k', 0) + 1\n"
               "        return rng.random(1) + self.k",
}


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_a_non_deterministic_sampler_is_refused(tmp_path, kind):
    spec = bad_plugin(tmp_path, BASE.replace("return rng.random(1)", SAMPLERS[kind]))
    problem = resolve_problem(spec)
    solver = problem.build()
    with pytest.raises(PluginError) as info:
        check_deterministic_sampler(solver, 3, 11, label=problem.label)
    assert_one_line(info.value, f"(plugin '{spec}')", "sample_parameters() is not "
                    "deterministic: seed 3, sample 11 drew y[0] =",
                    "it must draw only from the rng it is given")


@pytest.mark.parametrize("body, part", [
    ("return rng.random(2)", "sample_parameters() must have shape (1,), got shape (2,)"),
    ("return [float('nan')]", "sample_parameters()[0] = nan is not finite"),
    ("raise KeyError('mu')", "sample_parameters() raised KeyError: 'mu' (seed 0, sample 0)"),
])
def test_a_broken_sampler_is_refused(tmp_path, body, part):
    spec = bad_plugin(tmp_path, BASE.replace("return rng.random(1)", body))
    solver = resolve_problem(spec).build()
    with pytest.raises(PluginError) as info:
        check_deterministic_sampler(solver, 0)
    assert_one_line(info.value, "problem 'bad'", part)


def test_a_deterministic_sampler_passes_and_returns_the_draw(info, plugin_file):
    solver = resolve_problem("toy_model.py:Quadratic").build()
    y = check_deterministic_sampler(solver, 4, 9)
    np.testing.assert_array_equal(y, np.random.default_rng([4, 9]).uniform([-1, 0], [1, 2]))


# ---------------------------------------------------------------------- provenance
def test_identity_changes_name_what_changed(plugin_file, tmp_path):
    problem = resolve_problem("toy_model.py:Quadratic")
    before = problem.describe(problem.build()).provenance()
    assert identity_changes(before, before) == []
    # the same content elsewhere is the same plugin
    moved = tmp_path / "sub"
    moved.mkdir()
    (moved / "copy.py").write_text(plugin_file.read_text())
    other = resolve_problem(f"{moved / 'copy.py'}:Quadratic")
    assert identity_changes(before, other.describe(other.build()).provenance()) == []
    # an edited file and a changed setting
    plugin_file.write_text(plugin_file.read_text() + "\n# tuned\n")
    edited = resolve_problem("toy_model.py:Quadratic")
    assert edited.cls is not problem.cls
    after = edited.describe(edited.build(scale=3.0)).provenance()
    changes = identity_changes(before, after)
    assert changes == [f"the plugin file's SHA-256 ({before['sha256'][:8]}... -> "
                       f"{after['sha256'][:8]}...)", "setting scale (1.0 -> 3.0)"]
    assert identity_changes(before, {**before, "kind": "module",
                                     "import_path": "lab.toy:Quadratic"}) == [
        "the way the problem is named ('file' -> 'module')",
        f"the import path ({before['import_path']!r} -> 'lab.toy:Quadratic')"]
    assert identity_changes({"kind": "entry_point", "import_path": "a:B", "distribution": "a",
                             "version": "1.0", "settings": {"n": 1}},
                            {"kind": "entry_point", "import_path": "a:B", "distribution": "a",
                             "version": "1.1", "settings": {"m": 2}}) == [
        "the version of a ('1.0' -> '1.1')", "setting m added (2)",
        "setting n removed (was 1)"]


def test_identity_round_trips_through_json(plugin_file):
    ident = resolve_problem("toy_model.py:Quadratic").identity
    again = ProblemIdentity.from_dict(json.loads(json.dumps(ident.as_dict())))
    assert again == ident
    assert resolve_problem(again.resolvable_spec).cls is resolve_problem(ident.spec).cls
    with pytest.raises(PluginError, match="malformed problem provenance record"):
        ProblemIdentity.from_dict({"spec": "x"})


def test_check_parameters_falls_back_to_the_vector_check(info, plugin_file):
    solver = resolve_problem("toy_model.py:Quadratic").build()
    assert check_parameters(solver, [1, 2]).dtype == np.float64
    with pytest.raises(InputError, match=r"y must have shape \(2,\), got shape \(3,\)"):
        check_parameters(solver, [1, 2, 3])
    with pytest.raises(InputError, match=r"y\[1\] = inf is not finite"):
        check_parameters(solver, [1, math.inf])
