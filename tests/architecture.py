"""The package's import graph and its layers (``python -m tests.architecture`` prints it).

Layers, lowest first; a module may import only from its own layer or below (imports inside
functions count too)::

    0  solvers.errors, solvers.common.*        exceptions and the shared runtime
    1  solvers.*                               PDE solvers (no torch)
    2  datasets.*                              sampling, MPI generation, storage (no torch)
    3  surrogate.*  (core)                     models, artifact, metadata, metrics, load()
    4  train.*                                 VarPro training, train-surrogate
    5  surrogate.evaluation.*, surrogate.serving.*, surrogate.export.*,
       surrogate.refinement.*                  (above training)
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("solvers", "datasets", "surrogate", "train")
TOP = ("surrogate.evaluation", "surrogate.serving", "surrogate.export", "surrogate.refinement")


def layer(module: str) -> int:
    """Layer number of a project module (see the module docstring)."""
    if module == "solvers.errors" or module.startswith("solvers.common"):
        return 0
    if any(module == t or module.startswith(t + ".") for t in TOP):
        return 5
    return {"solvers": 1, "datasets": 2, "surrogate": 3, "train": 4}[module.split(".")[0]]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (module level or inside functions)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, for every module of the four packages."""
    out: dict[str, set[str]] = defaultdict(set)
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] |= imports(path)
    return dict(out)


def upward_imports() -> list[str]:
    """Every import that points up a layer, as ``"a (L) -> b (M)"``."""
    return [f"{a} ({layer(a)}) -> {b} ({layer(b)})" for a, targets in sorted(graph().items())
            for b in sorted(targets) if layer(b) > layer(a)]


if __name__ == "__main__":
    g = graph()
    for mod in sorted(g, key=lambda m: (layer(m), m)):
        print(f"[{layer(mod)}] {mod} -> {', '.join(sorted(g[mod])) or '-'}")
    up = upward_imports()
    print(f"\n{len(g)} modules, {sum(len(v) for v in g.values())} imports, "
          f"{len(up)} pointing up a layer")
    print("\n".join(up))
    sys.exit(1 if up else 0)
