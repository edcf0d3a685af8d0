"""MPI engine of ``generate-dataset``: groups of ranks solve samples handed out dynamically.

Load balancing
--------------
``COMM_WORLD`` is split into groups of ``ranks_per_sample`` consecutive ranks; each group
solves one sample at a time on its own communicator. The next sample is taken from a shared
counter: an MPI window on rank 0 holding one int64, incremented with ``Fetch_and_op(SUM)``
by each group's leader inside a ``Lock_all`` passive-target epoch that stays open for the
whole run (a per-access ``Lock``/``Unlock`` would wait for rank 0 to enter MPI, i.e. for
its current solve to end). So a group takes a new sample the moment it is free, and every
rank computes, rank 0 included. Leaders send results to world rank 0, the only writer, with
non-blocking sends; rank 0 receives them (``improbe``) between its own samples and, once the
counter is exhausted, until every sample handed out has come back. Each sample handed out
produces exactly one result message, so the end is a simple count: no sentinel messages and no
waiting on a rank that has nothing left to do. Rank 0 then frees the window together with the
other ranks (a collective) and writes the final file.

Sample ``i``'s parameters are ``solver.sample_parameters(np.random.default_rng([seed, i]))``
(:mod:`datasets.sampling`) whichever group solves it, so datasets made on different numbers
of ranks are identical for the same group size. A sample whose solve raises
:class:`solvers.SolveError` (or returns non-finite numbers) is retried once by the same group,
then recorded as failed with the reason. Any other exception is a bug and ends the job.
File handling (resume, atomic checkpoints) is in :mod:`datasets.writer`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dolfinx_solver  # noqa: F401  (orders MPI ahead of petsc4py / dolfinx)
import numpy as np
from mpi4py import MPI

from datasets.errors import ConfigError, DatasetWriteError, Interrupted
from datasets.sampling import check_seed, draw_parameters
from datasets.splits import SplitSpec
from datasets.storage import FAILED, OK
from datasets.writer import DatasetWriter
from solvers import SolveError, SolverSettingsError, make_solver
from solvers.common.memory import check_memory, format_bytes

#: message tag of results sent to rank 0
RESULT_TAG = 4242
#: attempts per sample (a failed solve is retried once)
MAX_ATTEMPTS = 2
#: seconds rank 0 sleeps between polls once it has no samples of its own left
POLL_SECONDS = 0.005
#: bytes rank 0 holds per sample and stored value (the in-memory dataset, the HDF5 image
#: built from it for each checkpoint, and the copy read back on resume)
BYTES_PER_VALUE = 3 * 8
#: bytes per sample besides y and c (status, times, attempts, rank, reason, split indices)
BYTES_PER_SAMPLE = 120



@dataclass(frozen=True)
class GenerationOptions:
    """What to generate and where.

    Attributes
    ----------
    problem : str
        "cdr" or "dcr".
    out : Path
        Output HDF5 file (created, or resumed if it exists).
    samples : int
        Number of samples.
    seed : int
        Dataset seed (>= 0).
    settings : dict
        Solver-setting overrides passed to ``make_solver``.
    ranks_per_sample : int
        Ranks that solve one sample together.
    split : SplitSpec, optional
        Split sizes; None means SPEC 3's ratios for the problem.
    checkpoint_interval : float
        Minimum seconds between checkpoints of the output file.
    progress : bool
        Show a progress bar on rank 0.
    """

    problem: str
    out: Path
    samples: int
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    ranks_per_sample: int = 1
    split: SplitSpec | None = None
    checkpoint_interval: float = 10.0
    progress: bool = True

    def resolved_split(self) -> SplitSpec:
        """The split to draw: the one given, or the problem's default."""
        return self.split if self.split is not None else SplitSpec.default(self.problem)

    def check(self, world_size: int) -> None:
        """Raise ConfigError for invalid options."""
        try:
            check_seed(self.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.samples < 1:
            raise ConfigError(f"--samples must be >= 1, got {self.samples}")
        if self.ranks_per_sample < 1 or world_size % self.ranks_per_sample:
            raise ConfigError(f"--ranks-per-sample {self.ranks_per_sample} must divide the "
                              f"number of MPI ranks ({world_size})")
        if not self.checkpoint_interval >= 0:
            raise ConfigError("--checkpoint-interval must be >= 0 seconds")
        self.resolved_split().check(self.samples)


@dataclass(frozen=True)
class SampleResult:
    """Outcome of one sample, sent to the writer.

    Attributes
    ----------
    index : int
        Sample index.
    status : int
        ``storage.OK`` or ``storage.FAILED``.
    c : numpy.ndarray or None
        Observables, shape (n_observables,), if ok.
    solve_time : float
        Seconds over all attempts.
    attempts : int
        Solves tried (1 or 2).
    reason : str
        Why the last attempt failed ("" if ok).
    rank : int
        World rank of the leader of the group that solved it.
    """

    index: int
    status: int
    c: np.ndarray | None
    solve_time: float
    attempts: int
    reason: str
    rank: int


@dataclass(frozen=True)
class Summary:
    """What a run did, identical on every rank."""

    problem: str
    out: str
    n_samples: int
    n_ok: int
    n_failed: int
    n_solved: int
    n_ranks: int
    wall_time: float
    solve_wall_time: float
    split_sizes: dict[str, int]

    @property
    def rate(self) -> float:
        """Samples solved per second of the solving phase."""
        return self.n_solved / self.solve_wall_time if self.solve_wall_time > 0 else 0.0

    def line(self) -> str:
        """The one-line report printed at the end."""
        pending = self.n_samples - self.n_ok - self.n_failed
        splits = "/".join(str(v) for v in self.split_sizes.values()) or "none"
        ranks = f"{self.n_ranks} rank" + ("s" if self.n_ranks != 1 else "")
        return (f"{self.problem} -> {self.out}: {self.n_samples} samples, {self.n_ok} ok, "
                f"{self.n_failed} failed, {pending} pending; {self.n_solved} solved on {ranks} "
                f"in {self.wall_time:.1f} s wall time (solving {self.solve_wall_time:.1f} s, "
                f"{self.rate:.3g} samples/s); train/validation/test {splits}")


class SharedCounter:
    """A "next sample" counter in an MPI window on rank 0 of ``comm`` (collective)."""

    def __init__(self, comm: MPI.Intracomm):
        itemsize = MPI.INT64_T.Get_size()
        info = MPI.Info.Create()
        for key, value in (("accumulate_ops", "same_op"), ("which_accumulate_ops", "sum"),
                           ("accumulate_ordering", "none")):
            info.Set(key, value)
        self._win = MPI.Win.Allocate(itemsize if comm.rank == 0 else 0, itemsize, info, comm)
        info.Free()
        if comm.rank == 0:
            self._win.Lock(0, MPI.LOCK_EXCLUSIVE)
            self._win.Put(np.zeros(1, dtype=np.int64), 0)
            self._win.Unlock(0)
        comm.Barrier()
        self._win.Lock_all()

    def next(self) -> int:
        """Atomically fetch the counter and add one."""
        one, old = np.ones(1, dtype=np.int64), np.empty(1, dtype=np.int64)
        self._win.Fetch_and_op(one, old, 0, 0, MPI.SUM)
        self._win.Flush(0)
        return int(old[0])

    def free(self) -> None:
        """End the epoch and free the window (collective)."""
        self._win.Unlock_all()
        self._win.Free()


def solve_sample(solver: Any, seed: int, index: int, rank: int) -> SampleResult:
    """Solve sample ``index`` (retrying once on failure); call on every rank of the solver's
    communicator. ``rank`` is the group leader's world rank, recorded with the result."""
    y = draw_parameters(solver, seed, index)
    start = time.perf_counter()
    reason = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            c = np.asarray(solver.solve(y, sample=index), dtype=np.float64)
        except SolveError as exc:
            reason = exc.reason if exc.time is None else f"{exc.reason} (t = {exc.time:g})"
            continue
        if c.shape != (solver.n_observables,):
            raise RuntimeError(f"{solver.name} returned observables of shape {c.shape} for "
                               f"sample {index}, expected ({solver.n_observables},)")
        if np.all(np.isfinite(c)):
            return SampleResult(index, OK, c, time.perf_counter() - start, attempt, "", rank)
        reason = f"non-finite observables ({np.count_nonzero(~np.isfinite(c))} entries)"
    return SampleResult(index, FAILED, None, time.perf_counter() - start, MAX_ATTEMPTS, reason,
                        rank)


def generate(options: GenerationOptions, comm: MPI.Intracomm | None = None) -> Summary:
    """Generate (or resume) a dataset; collective over ``comm`` (default COMM_WORLD).

    Raises
    ------
    ConfigError, ConfigMismatchError, DatasetFileError
        User errors, raised on every rank alike before any sample is solved.
    """
    world = (comm if comm is not None else MPI.COMM_WORLD).Dup()
    try:
        return _generate(options, world)
    finally:
        world.Free()


def _generate(options: GenerationOptions, world: MPI.Intracomm) -> Summary:
    start = time.perf_counter()
    options.check(world.size)
    k = options.ranks_per_sample
    group = world.Split(world.rank // k, world.rank)  # consecutive ranks
    try:
        solver = _everywhere(world, lambda: _build_solver(options, group))
        _everywhere(world, lambda: check_sizes(options, solver) if world.rank == 0 else None)
        config = {"problem": options.problem, "solver": solver.settings(),
                  "generation": {"samples": options.samples, "seed": options.seed,
                                 "ranks_per_sample": k,
                                 "split": options.resolved_split().to_json()}}
        writer = _everywhere(world, lambda: DatasetWriter.open(
            options.out, config, solver, world.size,
            checkpoint_interval=options.checkpoint_interval,
            progress=options.progress) if world.rank == 0 else None)
        todo = world.bcast(writer.pending() if writer is not None else None)
        solve_start = time.perf_counter()
        _solve_all(world, group, solver, options.seed, todo, writer)
        solve_wall = time.perf_counter() - solve_start
        summary = None
        if writer is not None:
            splits = writer.finish(options.resolved_split())
            status = writer.state.status
            summary = Summary(options.problem, str(options.out), options.samples,
                              int(np.count_nonzero(status == OK)),
                              int(np.count_nonzero(status == FAILED)), len(todo), world.size,
                              time.perf_counter() - start, solve_wall, splits)
        return world.bcast(summary)
    finally:
        group.Free()


def check_sizes(options: GenerationOptions, solver: Any) -> None:
    """Refuse (ConfigError) a sample count whose dataset cannot fit in memory (rank 0 holds
    all of it) or on the output's file system, naming --samples and the estimate."""
    values = options.samples * (solver.n_parameters + solver.n_observables)
    what = (f"--samples {options.samples} ({solver.n_parameters} parameters + "
            f"{solver.n_observables} observables per sample)")
    try:
        check_memory(BYTES_PER_VALUE * values + BYTES_PER_SAMPLE * options.samples, what)
    except SolverSettingsError as exc:
        raise ConfigError(str(exc)) from None
    file_size = 8 * values + 20 * options.samples
    folder = Path(options.out).absolute().parent
    while not folder.exists():
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if file_size > free:
        raise ConfigError(f"{what}: the dataset file needs about {format_bytes(file_size)}, but "
                          f"only {format_bytes(free)} is free in {folder}")


def _build_solver(options: GenerationOptions, comm: MPI.Comm) -> Any:
    """The solver of ``options.problem`` on ``comm``; invalid settings raise ConfigError."""
    try:
        return make_solver(options.problem, comm, **options.settings)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid {options.problem} settings: {exc}") from None


def _everywhere[T](comm: MPI.Comm, fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; a ValueError (user error) on any rank is raised on all."""
    value: T | None = None
    error: ValueError | None = None
    try:
        value = fn()
    except ValueError as exc:
        error = exc
    errors = [e for e in comm.allgather(error) if e is not None]
    if errors:
        raise errors[0]
    return cast("T", value)  # fn() returned on every rank


def _solve_all(world: MPI.Intracomm, group: MPI.Comm, solver: Any, seed: int, todo: np.ndarray,
               writer: DatasetWriter | None) -> None:
    """Solve the samples ``todo`` with dynamic hand-out; results end up in ``writer``."""
    counter = SharedCounter(world)
    try:
        _solve_loop(world, group, solver, seed, todo, writer, counter)
    except DatasetWriteError:
        if world.size == 1:
            counter.free()
        raise
    except Interrupted:
        if writer is not None:  # rank 0: keep every result that has arrived
            _receive_results(world, writer)
            writer.checkpoint()
        raise
    counter.free()


def _solve_loop(world: MPI.Comm, group: MPI.Comm, solver: Any, seed: int, todo: np.ndarray,
                writer: DatasetWriter | None, counter: SharedCounter) -> None:
    leader = group.rank == 0
    leader_rank = world.rank - group.rank  # groups are consecutive world ranks
    sends: list[MPI.Request] = []
    while True:
        position = group.bcast(counter.next() if leader else None)
        if position >= todo.size:
            break
        result = solve_sample(solver, seed, int(todo[position]), leader_rank)
        if writer is not None:
            writer.record(result)
            _receive_results(world, writer)
            writer.maybe_checkpoint()
        elif leader:
            sends.append(world.isend(result, dest=0, tag=RESULT_TAG))
            sends = [r for r in sends if not r.Test()]
    if writer is not None:
        while writer.n_recorded < todo.size:
            if not _receive_results(world, writer):
                time.sleep(POLL_SECONDS)
            writer.maybe_checkpoint()
    MPI.Request.waitall(sends)


def _receive_results(world: MPI.Comm, writer: DatasetWriter) -> int:
    """Record every result that has arrived at rank 0; returns how many."""
    n = 0
    while (message := world.improbe(source=MPI.ANY_SOURCE, tag=RESULT_TAG)) is not None:
        writer.record(message.recv())
        n += 1
    return n
