"""Keep the MPI library's listening sockets on loopback for single-node runs.

The MPICH shipped with the FEniCSx wheel (MPICH 5, device ch4 with the UCX netmod by default,
OFI as an alternative) opens TCP listening sockets in every process at ``MPI_Init``, even on
one rank: UCX's TCP transport and connection manager bind one socket per network interface,
so a plain ``solve-pde`` listened on the machine's external address. For a job whose ranks
all run on one node, loopback is all MPI needs (shared memory carries the data between
ranks), so before MPI is initialised :func:`configure_mpi_network` sets, unless they are
already set,

* ``UCX_NET_DEVICES=lo``  (UCX netmod, the default: only the loopback device),
* ``FI_TCP_IFACE=lo`` and ``FI_SOCKETS_IFACE=lo``  (OFI netmod, ``MPIR_CVAR_CH4_NETMOD=ofi``).

A value the user has set always wins. ``VARPRO_MPI_LOOPBACK=0`` switches this off, ``=1``
forces it, the default ``auto`` applies it when the run is known to be on one node:
no launcher at all (a singleton), Hydra's ``mpiexec`` with all ``PMI_SIZE`` ranks local
(``MPI_LOCALNRANKS``), ``mpiexec.gforker`` (always one node), Slurm with one node, or Open
MPI with all ranks local. Otherwise (several nodes, or an unknown launcher) nothing is
changed and the interface is chosen as usual: ``UCX_NET_DEVICES=<device>`` (e.g. ``eth0``,
``mlx5_0:1``) with UCX, ``FI_PROVIDER`` / ``FI_TCP_IFACE`` with OFI, and ``mpiexec -iface
<if>`` for Hydra's own traffic.

Every entry point that can initialise MPI goes through :func:`init_mpi` (the commands, the
solvers' modules, :func:`solvers.make_solver`, the dataset engine, evaluate-surrogate, and so
``PDEModel(...)``, ``serve-surrogate --pde`` and the examples): it applies the loopback
defaults and only then imports ``dolfinx_solver`` and ``mpi4py.MPI`` (importing either
initialises MPI). Code that needs MPI calls ``init_mpi()`` instead of importing them.

Not covered: Hydra's ``mpiexec`` itself listens on all interfaces for its control
connection (the launcher's socket, opened before this code runs; ranks inherit it).
``mpiexec.gforker`` (fork-based, one node) opens none; ``MPIEXEC_PORT_RANGE`` restricts
Hydra's ports to a range a firewall can filter.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import MutableMapping
from typing import Any

from solvers.errors import MPIStartError

#: environment defaults that keep MPI's sockets on the loopback interface
LOOPBACK_DEFAULTS: dict[str, str] = {
    "UCX_NET_DEVICES": "lo",
    "FI_TCP_IFACE": "lo",
    "FI_SOCKETS_IFACE": "lo",
}

#: the switch: "auto" (default), "1" (always), "0" (never)
SWITCH = "VARPRO_MPI_LOOPBACK"

_LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_COMM_WORLD_", "SLURM_STEP_", "HYDRA_", "MPI_LOCAL")


def _int(environ: MutableMapping[str, str], key: str) -> int | None:
    try:
        return int(environ[key])
    except (KeyError, ValueError):
        return None


def single_node(environ: MutableMapping[str, str] | None = None) -> bool | None:
    """Whether every rank of this job runs on this node: True, False, or None (unknown)."""
    env = os.environ if environ is None else environ
    size = _int(env, "PMI_SIZE")
    if size is not None:
        local = _int(env, "MPI_LOCALNRANKS")  # Hydra
        if local is not None:
            return local == size
        if env.get("MPI_UNIVERSE_SIZE") == "-1" and "PMI_HOSTNAME" not in env:
            return True  # mpiexec.gforker: fork on one node
    nodes = _int(env, "SLURM_STEP_NUM_NODES") or _int(env, "SLURM_JOB_NUM_NODES")
    if "SLURM_STEP_ID" in env and nodes is not None:
        return nodes == 1
    ompi = _int(env, "OMPI_COMM_WORLD_SIZE")
    if ompi is not None:
        return _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE") == ompi
    if not any(k.startswith(_LAUNCHER_PREFIXES) for k in env):
        return True  # singleton: no launcher
    return None


def configure_mpi_network(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the loopback defaults in ``environ`` (default ``os.environ``) where they apply.

    Must run before MPI is initialised (before ``from mpi4py import MPI``); later it has no
    effect. Returns the variables it set (empty if none).
    """
    env = os.environ if environ is None else environ
    mode = env.get(SWITCH, "auto").strip().lower()
    if mode in ("0", "no", "off", "false"):
        return {}
    if mode not in ("1", "yes", "on", "true") and single_node(env) is not True:
        return {}
    applied = {k: v for k, v in LOOPBACK_DEFAULTS.items() if k not in env}
    env.update(applied)
    return applied


#: smallest file-size limit (``ulimit -f``) under which MPI can start: MPICH 5 with UCX
#: creates shared-memory files in /dev/shm at MPI_Init (measured: 4 MiB fails, 16 MiB
#: works for 1 and 2 ranks), and aborts with an error stack when it cannot
MIN_FILE_SIZE_LIMIT = 32 * 2**20


def check_file_size_limit() -> None:
    """Refuse (:class:`~solvers.errors.MPIStartError`) a file-size limit that MPI_Init cannot
    work under, before it aborts the process."""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft != resource.RLIM_INFINITY and soft < MIN_FILE_SIZE_LIMIT:
        raise MPIStartError(
            f"a file-size limit of {soft // 1024} KiB is set (ulimit -f {soft // 1024}): MPI "
            f"cannot create its shared-memory files at start-up under "
            f"{MIN_FILE_SIZE_LIMIT // 2**20} MiB; raise the limit (ulimit -f unlimited, or at "
            f"least {MIN_FILE_SIZE_LIMIT // 1024}) and run the command again")


def init_mpi() -> Any:
    """Initialise MPI the one way every entry point must: :func:`configure_mpi_network`
    first (unless MPI is already initialised, when it could no longer take effect), then
    ``import dolfinx_solver`` (which orders ``mpi4py.MPI`` ahead of PETSc and dolfinx and
    initialises MPI). Idempotent and cheap after the first call.

    Returns
    -------
    module
        ``mpi4py.MPI``.

    Raises
    ------
    MPIStartError
        MPI cannot start here (:func:`check_file_size_limit`).
    """
    if "mpi4py.MPI" not in sys.modules:
        check_file_size_limit()
        configure_mpi_network()
    import dolfinx_solver  # noqa: F401  (orders MPI ahead of petsc4py / dolfinx)
    from mpi4py import MPI

    return MPI
