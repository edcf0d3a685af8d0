"""Every import points down the layers of ``tests/architecture.py``."""

from __future__ import annotations

import subprocess
import sys

from tests.architecture import ROOT, graph, layer, upward_imports


def test_no_import_points_up_a_layer():
    assert upward_imports() == []


def test_the_checker_sees_lazy_upward_imports(tmp_path, monkeypatch):
    """The rule catches an import inside a function (like the old surrogate -> train ones)."""
    import tests.architecture as arch

    pkg = tmp_path / "surrogate"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("def f():\n    from train.run import train_one\n")
    (tmp_path / "solvers").mkdir()
    (tmp_path / "solvers" / "x.py").write_text("import datasets.reader\n")
    monkeypatch.setattr(arch, "ROOT", tmp_path)
    monkeypatch.setattr(arch, "PACKAGES", ("solvers", "datasets", "surrogate", "train"))
    assert arch.upward_imports() == ["solvers.x (1) -> datasets.reader (2)",
                                     "surrogate.bad (3) -> train.run (4)"]


def test_layers_of_known_modules():
    assert [layer(m) for m in ("solvers.common.cli", "solvers.errors", "solvers.cdr",
                               "datasets.generate", "surrogate.metadata", "train.run",
                               "surrogate.evaluation.report", "surrogate.serving.app")] == \
        [0, 0, 1, 2, 3, 4, 5, 5]
    assert "train.run" in graph()


def test_solvers_and_datasets_never_import_torch():
    """Neither package names torch in any import (module level or lazy)."""
    import ast

    for pkg in ("solvers", "datasets"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n.split(".")[0] == "torch" for n in names), path


def test_module_runs_as_a_script():
    proc = subprocess.run([sys.executable, "-m", "tests.architecture"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 pointing up a layer" in proc.stdout
