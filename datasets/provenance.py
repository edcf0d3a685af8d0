"""Provenance of a generated dataset: software versions, git commit and timestamps (SPEC 3)."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
from datetime import UTC, datetime
from pathlib import Path

PACKAGE = "varpro-surrogates"


def now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit() -> str:
    """HEAD of the git checkout holding this package, or "unknown" (best effort)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def package_version() -> str:
    """Installed version of varpro-surrogates, or "unknown"."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _module_version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return "unavailable"


def software_versions() -> dict[str, str]:
    """Versions of the numerical stack (call after ``import dolfinx_solver``).

    Returns
    -------
    dict
        Keys ``package_version``, ``git_commit``, ``dolfinx_version``, ``petsc_version``,
        ``mpi4py_version``, ``mpi_library``, ``h5py_version``, ``hdf5_version``,
        ``numpy_version``.
    """
    import h5py
    import numpy as np

    from solvers.common.mpi_network import init_mpi

    MPI = init_mpi()

    try:
        from petsc4py import PETSc

        petsc = ".".join(str(v) for v in PETSc.Sys.getVersion())
    except ImportError:
        petsc = "unavailable"
    return {
        "package_version": package_version(),
        "git_commit": git_commit(),
        "dolfinx_version": _module_version("dolfinx"),
        "petsc_version": petsc,
        "mpi4py_version": _module_version("mpi4py"),
        "mpi_library": " ".join(MPI.Get_library_version().splitlines()[0].split()),
        "h5py_version": h5py.version.version,
        "hdf5_version": h5py.version.hdf5_version,
        "numpy_version": np.__version__,
    }
