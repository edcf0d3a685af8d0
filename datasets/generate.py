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
of ranks are identical for the same group size. A caller that chose the parameters itself
(adaptive sampling, ``refine-surrogate``) passes them as ``GenerationOptions.parameters``
(samples x p); their SHA-256 is part of the stored configuration, so a resumed run must
pass the same ones.

Problems
--------
The problem is any spec :func:`solvers.plugins.resolve_problem` accepts (a registered name,
``package.module:Class``, ``path/file.py:Class``, an entry point). Before the output file is
opened every rank resolves and builds it, describes it (its facts, checked) and draws sample
0 twice to refuse a sampler that is not deterministic; the configuration stored in the file
records the plugin's identity (``plugin``: import path, file SHA-256 or distribution version)
and the facts training needs (``facts``), so training needs no user code and resuming with a
changed plugin is refused naming what changed (:mod:`datasets.writer`).

Failures
--------
A sample whose solve raises :class:`solvers.SolveError` or returns non-finite numbers is
retried once by the same group, then recorded as failed with the reason; so is, for a plugin,
a solve that raises any exception (its one-line message is the reason). A solve that runs past
``--sample-timeout`` is recorded as failed without a retry (:mod:`datasets.timeout`, with its
limits). Observables of the wrong shape or type break the problem's contract: the sample is
recorded as failed, the file is saved and the job ends (:class:`ProblemBrokeContract`, exit
status 1; resumable). Any other exception of a registered problem is a bug and ends the job.
File handling (resume, atomic checkpoints) is in :mod:`datasets.writer`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from solvers.common.mpi_network import init_mpi

init_mpi()  # loopback defaults for single-node runs, then MPI (before petsc4py / dolfinx)

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from datasets.errors import (  # noqa: E402
    ConfigError,
    DatasetWriteError,
    Interrupted,
    ProblemBrokeContract,
)
from datasets.sampling import check_seed, draw_parameters, sample_rng  # noqa: E402
from datasets.splits import SplitSpec  # noqa: E402
from datasets.storage import FAILED, OK  # noqa: E402
from datasets.timeout import SampleTimeout, check_timeout, time_limit  # noqa: E402
from datasets.writer import DatasetWriter  # noqa: E402
from solvers import SolveError, SolverSettingsError  # noqa: E402
from solvers.common.memory import check_memory, format_bytes  # noqa: E402
from solvers.plugins import (  # noqa: E402
    PluginError,
    PluginOutputError,
    Problem,
    ProblemInfo,
    check_deterministic_sampler,
    check_output,
    one_line,
    resolve_problem,
)

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
        The problem spec: a registered name (:data:`solvers.SOLVERS`), an entry point,
        ``package.module:Class`` or ``path/file.py:Class`` (:mod:`solvers.plugins`).
    out : Path
        Output HDF5 file (created, or resumed if it exists).
    samples : int or None
        Number of samples; None: the problem's ``default_samples`` (the paper's for CDR and
        DCR; a problem that declares none needs it).
    seed : int
        Dataset seed (>= 0).
    settings : dict
        Setting overrides passed to the problem's constructor.
    ranks_per_sample : int
        Ranks that solve one sample together.
    split : SplitSpec, optional
        Split sizes; None means the problem's ``default_split`` (SPEC 3's ratios for CDR
        and DCR).
    checkpoint_interval : float
        Minimum seconds between checkpoints of the output file.
    progress : bool
        Show a progress bar on rank 0.
    sample_timeout : float, optional
        Seconds one solve may take before it is interrupted and recorded as failed
        (:mod:`datasets.timeout`); None: no limit. Not part of the stored configuration.
    parameters : numpy.ndarray, optional
        Shape (samples, p): solve these parameters instead of the sampler's draws (the same
        array on every rank); ``seed`` then only seeds the split.
    """

    problem: str
    out: Path
    samples: int | None
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    ranks_per_sample: int = 1
    split: SplitSpec | None = None
    checkpoint_interval: float = 10.0
    progress: bool = True
    sample_timeout: float | None = None
    parameters: np.ndarray | None = field(default=None, compare=False)

    def resolved_split(self, default: tuple[float, float, float] | None = None) -> SplitSpec:
        """The split to draw: the one given, else ``default`` (the problem's declared
        fractions), else the registered problem's default."""
        if self.split is not None:
            return self.split
        if default is not None:
            return SplitSpec.from_fractions(default)
        return SplitSpec.default(self.problem)

    def n_samples(self) -> int:
        """``samples`` once resolved (:func:`with_problem_defaults`)."""
        if self.samples is None:
            raise ConfigError(f"--samples is required for problem {self.problem!r}")
        return int(self.samples)

    def check(self, world_size: int) -> None:
        """Raise ConfigError for invalid options (a default split is checked once the
        problem has declared it)."""
        try:
            check_seed(self.seed)
            check_timeout(self.sample_timeout)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.n_samples() < 1:
            raise ConfigError(f"--samples must be >= 1, got {self.samples}")
        if self.ranks_per_sample < 1 or world_size % self.ranks_per_sample:
            raise ConfigError(f"--ranks-per-sample {self.ranks_per_sample} must divide the "
                              f"number of MPI ranks ({world_size})")
        if self.parameters is not None:
            y = np.asarray(self.parameters)
            if y.ndim != 2 or y.shape[0] != self.samples or not np.all(np.isfinite(y)):
                raise ConfigError(f"parameters must be a finite ({self.samples}, p) array, got "
                                  f"shape {y.shape}")
        if not self.checkpoint_interval >= 0:
            raise ConfigError("--checkpoint-interval must be >= 0 seconds")
        if self.split is not None:
            self.split.check(self.n_samples())


def with_problem_defaults(options: GenerationOptions, problem: Problem) -> GenerationOptions:
    """``options`` with ``samples`` filled in from the problem's ``default_samples``
    (ConfigError if it declares none)."""
    if options.samples is not None:
        return options
    samples = problem.facts.default_samples
    if samples is None:
        raise ConfigError(f"--samples is required: {problem.label} declares no "
                          "default_samples")
    return dataclasses.replace(options, samples=samples)


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
    fatal : bool
        The problem broke its contract (wrong output shape or type, a collective solve that
        timed out): rank 0 records the sample as failed, saves the file and ends the job.
    """

    index: int
    status: int
    c: np.ndarray | None
    solve_time: float
    attempts: int
    reason: str
    rank: int
    fatal: bool = False


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
    first_failure: str = ""

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

    def failure_line(self) -> str:
        """``""``, or one line on the failed samples: how many, and the first one's reason."""
        if not self.n_failed:
            return ""
        return (f"{self.n_failed} sample{'s' if self.n_failed != 1 else ''} failed; first: "
                f"{self.first_failure}")


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


class SampleSolver:
    """Solves samples on one group of ranks: the built problem, its description and the time
    limit; call it on every rank of the group (see the module docstring for the failures).

    Parameters
    ----------
    problem : Problem
        The resolved problem.
    solver : PDESolver
        ``problem.build(comm, **settings)``.
    info : ProblemInfo
        ``problem.describe(solver)`` (n_observables and the label for messages).
    settings : dict
        The settings it was built with (to rebuild it after a timeout).
    comm : MPI.Comm
        The group's communicator.
    timeout : float, optional
        Seconds per solve (:func:`datasets.timeout.time_limit`).
    parameters : numpy.ndarray, optional
        (samples, p): the parameters of every sample instead of the sampler's draws.
    """

    def __init__(self, problem: Problem, solver: Any, info: ProblemInfo,
                 settings: dict[str, Any], comm: MPI.Comm, timeout: float | None = None,
                 parameters: np.ndarray | None = None):
        self.problem, self.solver, self.info = problem, solver, info
        self.settings, self.comm, self.timeout = settings, comm, timeout
        self.parameters = parameters
        self.plugin = problem.identity.kind != "registered"
        self._stale = False

    def __call__(self, seed: int, index: int, rank: int) -> SampleResult:
        """Solve sample ``index`` (retrying once on failure). ``rank`` is the group leader's
        world rank, recorded with the result."""
        if self._stale:  # a timed-out solve may have left the solver half-way
            self.solver, self._stale = self.problem.build(self.comm, **self.settings), False
        y = draw_parameters(self.solver, seed, index) if self.parameters is None else \
            np.asarray(self.parameters[index], dtype=np.float64)
        start = time.perf_counter()
        reason = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with time_limit(self.timeout):
                    raw = self.solver.solve(y, sample=index)
                c = check_output(self.info, raw, index)
            except SampleTimeout as exc:
                return self._timed_out(index, exc, time.perf_counter() - start, attempt, rank)
            except PluginOutputError as exc:
                reason = exc.reason
                if exc.kind != "nonfinite":  # a broken contract: every sample would repeat it
                    return SampleResult(index, FAILED, None, time.perf_counter() - start,
                                        attempt, reason, rank, fatal=True)
                continue
            except SolveError as exc:
                reason = exc.reason if exc.time is None else f"{exc.reason} (t = {exc.time:g})"
                if self.plugin:
                    reason = f"{self.info.label}: {reason}"
                continue
            except Exception as exc:
                if not self.plugin:  # a registered problem's bug ends the job
                    raise
                reason = f"{self.info.label}: solve() raised {one_line(exc)}"
                continue
            return SampleResult(index, OK, c, time.perf_counter() - start, attempt, "", rank)
        return SampleResult(index, FAILED, None, time.perf_counter() - start, MAX_ATTEMPTS,
                            reason, rank)

    def _timed_out(self, index: int, exc: SampleTimeout, elapsed: float, attempt: int,
                   rank: int) -> SampleResult:
        reason = f"{self.info.label}: solve() timed out after {exc.seconds:g} s"
        if self.comm.size > 1:  # the group's collective state is unknown: stop the job
            return SampleResult(index, FAILED, None, elapsed, attempt,
                                reason + " in a solve on several ranks (--ranks-per-sample); "
                                "the ranks of its group may be anywhere", rank, fatal=True)
        self._stale = True
        return SampleResult(index, FAILED, None, elapsed, attempt, reason, rank)


def generate(options: GenerationOptions, comm: MPI.Intracomm | None = None) -> Summary:
    """Generate (or resume) a dataset; collective over ``comm`` (default COMM_WORLD).

    Raises
    ------
    ConfigError, ConfigMismatchError, DatasetFileError, solvers.plugins.PluginError
        User errors, raised on every rank alike before any sample is solved.
    ProblemBrokeContract
        On rank 0, when a solve broke the problem's contract (the file is saved first).
    """
    world = (comm if comm is not None else MPI.COMM_WORLD).Dup()
    try:
        return _generate(options, world)
    finally:
        world.Free()


def problem_config(options: GenerationOptions, problem: Problem, info: ProblemInfo,
                   split: SplitSpec) -> dict[str, Any]:
    """The configuration stored in the file (and compared on resume): problem name, solver
    settings, generation options, the plugin's identity and the problem's training facts."""
    return {"problem": info.name, "solver": info.settings,
            "generation": {"samples": options.n_samples(), "seed": options.seed,
                           "ranks_per_sample": options.ranks_per_sample,
                           "split": split.to_json()},
            "plugin": problem.identity.as_dict(), "facts": info.facts_record()}


def _generate(options: GenerationOptions, world: MPI.Intracomm) -> Summary:
    start = time.perf_counter()
    problem = _everywhere(world, lambda: resolve_problem(options.problem))
    options = _everywhere(world, lambda: with_problem_defaults(options, problem))
    _everywhere(world, lambda: options.check(world.size))
    k = options.ranks_per_sample
    group = world.Split(world.rank // k, world.rank)  # consecutive ranks
    try:
        solver = _everywhere(world, lambda: _build_solver(problem, options, group))
        info = _everywhere(world, lambda: problem.describe(solver))
        split = options.resolved_split(info.split_fractions)
        _everywhere(world, lambda: split.check(options.n_samples()))
        if options.parameters is None:  # the sampler draws the parameters: it must repeat
            _everywhere(world, lambda: check_deterministic_sampler(
                solver, options.seed, 0, label=info.label, rng=sample_rng))
        _everywhere(world, lambda: check_sizes(options, solver) if world.rank == 0 else None)
        config = problem_config(options, problem, info, split)
        params = options.parameters
        if params is not None:
            params = np.ascontiguousarray(params, dtype=np.float64)
            config["generation"]["parameters_sha256"] = hashlib.sha256(
                params.tobytes()).hexdigest()
        writer = _everywhere(world, lambda: DatasetWriter.open(
            options.out, config, solver, world.size,
            checkpoint_interval=options.checkpoint_interval, progress=options.progress,
            parameters=params, parameter_names=list(info.parameter_names),
            observable_coords=info.observable_coords) if world.rank == 0 else None)
        todo = world.bcast(writer.pending() if writer is not None else None)
        solve_start = time.perf_counter()
        worker = SampleSolver(problem, solver, info, options.settings, group,
                              check_timeout(options.sample_timeout), params)
        _solve_all(world, group, worker, options.seed, todo, writer)
        solve_wall = time.perf_counter() - solve_start
        summary = None
        if writer is not None:
            splits = writer.finish(split)
            status = writer.state.status
            summary = Summary(info.name, str(options.out), options.n_samples(),
                              int(np.count_nonzero(status == OK)),
                              int(np.count_nonzero(status == FAILED)), len(todo), world.size,
                              time.perf_counter() - start, solve_wall, splits,
                              _first_failure(writer))
        return world.bcast(summary)
    finally:
        group.Free()


def _first_failure(writer: DatasetWriter) -> str:
    """``"sample i: reason"`` of the lowest failed sample index, or ""."""
    failed = np.flatnonzero(writer.state.status == FAILED)
    if not failed.size:
        return ""
    i = int(failed[0])
    return f"sample {i}: {writer.state.failure_reason[i]}"


def check_sizes(options: GenerationOptions, solver: Any, disk: bool = True) -> None:
    """Refuse (ConfigError) a sample count whose dataset cannot fit in memory (rank 0 holds
    all of it) or (with ``disk``) on the output's file system, naming --samples and the
    estimate."""
    if options.parameters is not None and \
            np.shape(options.parameters)[1] != solver.n_parameters:
        raise ConfigError(f"parameters have {np.shape(options.parameters)[1]} columns, the "
                          f"{options.problem} solver takes {solver.n_parameters}")
    samples = options.n_samples()
    values = samples * (solver.n_parameters + solver.n_observables)
    what = (f"--samples {samples} ({solver.n_parameters} parameters + "
            f"{solver.n_observables} observables per sample)")
    try:
        check_memory(BYTES_PER_VALUE * values + BYTES_PER_SAMPLE * samples, what)
    except SolverSettingsError as exc:
        raise ConfigError(str(exc)) from None
    if not disk:
        return
    file_size = 8 * values + 20 * samples
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


def _build_solver(problem: Problem, options: GenerationOptions, comm: MPI.Comm) -> Any:
    """The problem built on ``comm``; invalid settings raise ConfigError (a plugin's broken
    constructor a PluginError naming it)."""
    try:
        return problem.build(comm, **options.settings)
    except PluginError:
        raise
    except (ValueError, TypeError) as exc:
        if problem.identity.kind == "registered":
            raise ConfigError(f"invalid {problem.name} settings: {exc}") from None
        raise ConfigError(str(exc)) from None


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


def _solve_all(world: MPI.Intracomm, group: MPI.Comm, worker: SampleSolver, seed: int,
               todo: np.ndarray, writer: DatasetWriter | None) -> None:
    """Solve the samples ``todo`` with dynamic hand-out; results end up in ``writer``."""
    counter = SharedCounter(world)
    try:
        _solve_loop(world, group, worker, seed, todo, writer, counter)
    except (DatasetWriteError, ProblemBrokeContract):
        if world.size == 1:
            counter.free()
        raise
    except Interrupted:
        if writer is not None:  # rank 0: keep every result that has arrived
            _receive_results(world, writer, stop_on_fatal=False)
            writer.checkpoint()
        raise
    counter.free()


def _solve_loop(world: MPI.Comm, group: MPI.Comm, worker: SampleSolver, seed: int,
                todo: np.ndarray, writer: DatasetWriter | None, counter: SharedCounter) -> None:
    leader = group.rank == 0
    leader_rank = world.rank - group.rank  # groups are consecutive world ranks
    sends: list[MPI.Request] = []
    while True:
        position = group.bcast(counter.next() if leader else None)
        if position >= todo.size:
            break
        result = worker(seed, int(todo[position]), leader_rank)
        if writer is not None:
            _record(writer, result)
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


def _record(writer: DatasetWriter, result: SampleResult, stop_on_fatal: bool = True) -> None:
    """Record one result; a fatal one (a broken contract) saves the file and raises
    :class:`ProblemBrokeContract` (rank 0 ends the job; mpiexec ends the other ranks)."""
    writer.record(result)
    if result.fatal and stop_on_fatal:
        writer.checkpoint()
        writer.close()
        raise ProblemBrokeContract(
            f"sample {result.index}: {result.reason}; the job stopped (the problem broke its "
            f"contract): every result so far is saved in {writer.path} (run the same command "
            "to resume)")


def _receive_results(world: MPI.Comm, writer: DatasetWriter, stop_on_fatal: bool = True) -> int:
    """Record every result that has arrived at rank 0; returns how many."""
    n = 0
    while (message := world.improbe(source=MPI.ANY_SOURCE, tag=RESULT_TAG)) is not None:
        _record(writer, message.recv(), stop_on_fatal)
        n += 1
    return n
