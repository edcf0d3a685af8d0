"""The command-line runtime shared by every command (solve-pde, generate-dataset,
train-surrogate, evaluate-surrogate, serve-surrogate).

* :class:`RankZeroParser`: argparse whose messages come from MPI world rank 0 only;
* :func:`whole_number`, :func:`path_argument`, :func:`add_set_option`: argument types and
  options used by several commands (``--samples 1e4``, ``--out ''`` refused, repeatable
  ``--set KEY=VALUE``);
* :func:`stop_on_signals`: SIGINT/SIGTERM raise :class:`~solvers.errors.Interrupted`;
* :func:`run_job`, :func:`exit_now`: failures to exit statuses, printed once.

Exit statuses (the same for every command): 0 success, 1 a failure while running (a solve,
a full disk), 2 bad input, 128 + N interrupted by signal N.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from solvers.errors import Interrupted

#: exit statuses
OK, FAILURE, BAD_INPUT, INTERRUPT_STATUS = 0, 1, 2, 128
#: errno values of a full disk or an exceeded quota / file-size limit
DISK_FULL = {28, 122, 27}


def _mpi() -> Any | None:
    """mpi4py.MPI if it is imported and initialised (never imports it)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi
    return None


def start_mpi(prog: str) -> Any:
    """:func:`~solvers.common.mpi_network.init_mpi` for a command: MPI on loopback for a
    single-node run; an environment MPI cannot start in
    (:class:`~solvers.errors.MPIStartError`) is one line from rank 0 and exit status 1
    instead of MPI's abort stack. Returns ``mpi4py.MPI``."""
    from solvers.common.mpi_network import init_mpi
    from solvers.errors import MPIStartError

    try:
        return init_mpi()
    except MPIStartError as exc:
        if world_rank() == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(FAILURE) from None


def world_rank() -> int:
    """This process's rank in MPI_COMM_WORLD (from the launcher's environment before MPI is
    initialised), 0 without a launcher."""
    mpi = _mpi()
    if mpi is not None:
        return mpi.COMM_WORLD.rank
    for key in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def world_size() -> int:
    """Size of MPI_COMM_WORLD if MPI is initialised, else 1."""
    mpi = _mpi()
    return mpi.COMM_WORLD.size if mpi is not None else 1


class RankZeroParser(argparse.ArgumentParser):
    """An ArgumentParser whose messages (usage, errors, help) come from world rank 0 only."""

    def _print_message(self, message: str, file: Any = None) -> None:
        if world_rank() == 0:
            super()._print_message(message, file)


def whole_number(text: str) -> int:
    """argparse type: an integer, also written as ``1e4``."""
    try:
        value = float(text) if any(ch in text.lower() for ch in ".e") else int(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    return int(value)


def path_argument(text: str) -> Path:
    """argparse type: a file or folder path; an empty one (``--out ''``, an unset shell
    variable) is refused instead of becoming the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r} (an unset variable?)")
    return Path(text)


def add_set_option(parser: argparse.ArgumentParser, dest: str = "assign",
                   help: str = "override a solver setting; VALUE is a TOML literal "
                               "(repeatable)") -> None:
    """Add the repeatable ``--set KEY=VALUE`` option (parse with
    :func:`solvers.common.toml.parse_assignments`)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest=dest,
                        help=help)


def stop_on_signals(*, rank_zero_only: bool = False, petsc: bool = True) -> None:
    """SIGINT/SIGTERM (Ctrl-C, a scheduler's time limit) raise
    :class:`~solvers.errors.Interrupted`; a repeated signal is then ignored, so that it
    cannot abort the checkpoint the first one triggers.

    Parameters
    ----------
    rank_zero_only : bool
        The other ranks ignore the signals (mpiexec ends them when rank 0 exits, after rank 0
        wrote its checkpoint).
    petsc : bool
        Initialise PETSc first: PetscInitialize installs handlers, which are replaced here.
    """
    def interrupt(signum: int, frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    if petsc:
        from petsc4py import PETSc  # noqa: F401
    handler = signal.SIG_IGN if rank_zero_only and world_rank() != 0 else interrupt
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def signal_name(signum: int) -> str:
    """``15`` -> ``"SIGTERM"``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_now(status: int, message: str) -> int:
    """Print ``message`` (stderr) on rank 0 only and end with ``status``; under MPI without
    MPI_Finalize (the other ranks may be anywhere, e.g. inside a collective solve), and at
    once after a signal. Returns ``status`` in a plain serial run."""
    if world_rank() == 0:
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)
    elif world_size() > 1:
        time.sleep(2.0)  # let rank 0 print first: mpiexec ends all ranks when one exits
    if world_size() > 1 or status >= INTERRUPT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def run_job[T](prog: str, world: Any, job: Callable[[], T],
               user_errors: tuple[type[BaseException], ...],
               interrupted_text: Callable[[], str],
               fatal_errors: tuple[type[BaseException], ...] = ()) -> tuple[int, T | None]:
    """Run an MPI job (``generate-dataset``, the fresh solves of ``evaluate-surrogate``) and
    turn its failures into exit statuses, reported once (rank 0).

    Returns (0, result), (2, None) for ``user_errors`` (bad input), (1, None) for
    ``fatal_errors`` raised on rank 0 while the others may still work (a dataset that cannot
    be written: the other ranks are ended). An :class:`~solvers.errors.Interrupted`
    prints ``interrupted_text()`` and exits at once with 128 + signal; any other exception is
    a bug: traceback, and all ranks are aborted.
    """
    try:
        return OK, job()
    except Interrupted as exc:
        print(f"{prog}: interrupted by signal {exc.signum} ({signal_name(exc.signum)}); "
              f"{interrupted_text()}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(INTERRUPT_STATUS + exc.signum)  # skip MPI_Finalize: nobody waits
    except fatal_errors as exc:
        if world.rank == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        if world.size > 1:
            sys.stdout.flush()
            os._exit(FAILURE)  # mpiexec ends the other ranks
        return FAILURE, None
    except user_errors as exc:
        if world.rank == 0:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return BAD_INPUT, None
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        if world.size > 1:
            world.Abort(1)
        raise


def os_error_message(exc: OSError) -> str:
    """One-line description of a failed file operation, with what to do when the disk is
    full."""
    where = f"{exc.filename}: " if exc.filename else ""
    text = f"cannot write {where}{exc.strerror or exc}"
    if exc.errno in DISK_FULL:
        text += ("; the files already in the output folder are unchanged and the temporary "
                 "files were removed: free some space and run the same command again (add "
                 "--resume to continue from the last checkpoint, if one was kept)")
    return text
