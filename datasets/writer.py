"""The single writer of a dataset file (world rank 0): create or resume, record, checkpoint.

Resume and atomicity
--------------------
The output file is never modified in place. Rank 0 keeps the whole dataset in memory and
writes it as a new file that atomically replaces the old one (:func:`storage.write_atomic`):
once when the job starts (every sample "pending", parameters already drawn), then at most
every ``checkpoint_interval`` seconds while results arrive (the interval grows to 20 times
the last write's duration, so checkpoints cost at most ~5 % of the run), and at the end.
A job killed at any moment, even with SIGKILL, therefore leaves a valid file holding every
result up to its last checkpoint. Started again with the same command, the job reads that
file, checks that its stored configuration equals the requested one (otherwise it refuses and
names the differing keys; a changed plugin is named by what changed in it: its file's SHA-256,
its version, ...: :func:`solvers.plugins.identity_changes`), re-draws the parameters to check
they match, and hands out only the samples still pending. Results are deterministic functions
of (configuration, seed, index), so the finished file holds the same data as an uninterrupted
run; recording a sample twice is an error. A lock file ``<out>.lock`` (``fcntl.flock``,
released by the kernel when the process dies) keeps two jobs from writing the same file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import shutil
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from datasets.config import differences
from datasets.errors import ConfigMismatchError, DatasetFileError, DatasetWriteError
from datasets.provenance import now, software_versions
from datasets.sampling import draw_all_parameters
from datasets.splits import SPLIT_NAMES, SplitSpec, make_splits
from datasets.storage import (
    FAILED,
    OK,
    PENDING,
    DatasetState,
    read_state,
    remove_stale_temporaries,
    write_atomic,
)
from solvers.common.atomic import OutputPathError, make_parents, remove_folders, resolve_output
from solvers.common.memory import format_bytes

#: a checkpoint waits at least this many times its predecessor's write time
CHECKPOINT_COST_FACTOR = 20.0


class DatasetWriter:
    """Rank 0's handle on the output file; use :meth:`open`.

    Parameters
    ----------
    path : Path
        Output file.
    state : DatasetState
        In-memory dataset, kept in sync with the results received.
    lock : file object
        Open lock file (held until :meth:`close`).
    checkpoint_interval : float
        Minimum seconds between checkpoints.
    progress : bool
        Show a tqdm progress bar on stderr.
    """

    def __init__(self, path: Path, state: DatasetState, lock: IO[str],
                 checkpoint_interval: float, progress: bool, created: list[Path] | None = None):
        self.path = path
        self._created = created or []
        self.state = state
        self._lock = lock
        self._interval = checkpoint_interval
        self._next_checkpoint = time.perf_counter() + checkpoint_interval
        self.n_recorded = 0
        self._runs = json.loads(state.attrs["runs"])
        n_done = int(np.count_nonzero(state.status != PENDING))
        self._bar = tqdm(total=state.status.size, initial=n_done, unit="sample",
                         desc=state.attrs["problem"], disable=not progress, smoothing=0.1,
                         dynamic_ncols=True)
        self._bar.set_postfix(failed=int(np.count_nonzero(state.status == FAILED)))

    @classmethod
    def open(cls, path: str | Path, config: dict[str, Any], solver: Any, n_ranks: int, *,
             checkpoint_interval: float = 10.0, progress: bool = True,
             parameters: np.ndarray | None = None,
             parameter_names: list[str] | None = None,
             observable_coords: dict[str, np.ndarray] | None = None) -> DatasetWriter:
        """Create ``path`` (all samples pending) or resume it if it exists.

        Parameters
        ----------
        config : dict
            Resolved configuration: ``problem``, ``solver`` (settings), ``generation``
            (``samples``, ``seed``, ``ranks_per_sample``, ``split``) and, since problems are
            plugins, ``plugin`` (its identity) and ``facts`` (for training).
        solver : PDESolver
            Draws the parameters.
        n_ranks : int
            MPI world size of this run (provenance).
        parameters : numpy.ndarray, optional
            Shape (samples, p): the parameters to store instead of the sampler's draws.
        parameter_names : list of str, optional
            n_parameters names (default: the solver's ``parameter_names``).
        observable_coords : dict, optional
            {name: (n_observables,) array} (default: the solver's ``observable_coords()``).

        Raises
        ------
        DatasetFileError
            The file exists but is not a readable dataset, or another job holds its lock.
        ConfigMismatchError
            The file was started with a different configuration.
        """
        given = Path(path)
        try:
            path = resolve_output(given, "--out")  # a symlink: write its target
        except OutputPathError as exc:
            raise DatasetFileError(str(exc)) from None
        created: list[Path] = []
        try:
            created = make_parents(path)
            lock = _acquire_lock(path)
        except OSError as exc:
            remove_folders(created)
            raise DatasetFileError(f"{given}: cannot write here: {exc.strerror}") from None
        except BaseException:
            remove_folders(created)
            raise
        try:
            remove_stale_temporaries(path)
            config = json.loads(json.dumps(config))
            gen = config["generation"]
            y = draw_all_parameters(solver, gen["seed"], gen["samples"], progress) \
                if parameters is None else np.array(parameters, dtype=np.float64)
            if path.exists():
                state = _resume_state(path, config, y)
            else:
                names = parameter_names if parameter_names is not None \
                    else list(solver.parameter_names)
                coords = observable_coords if observable_coords is not None \
                    else solver.observable_coords()
                state = DatasetState.empty(_new_attrs(config), names, y, solver.n_observables,
                                           coords)
            state.attrs.update(n_ranks=n_ranks, **software_versions())
            runs = json.loads(state.attrs["runs"])
            runs.append({"started": now(), "n_ranks": n_ranks, "solved": 0,
                         "git_commit": state.attrs["git_commit"]})
            state.attrs["runs"] = json.dumps(runs)
            writer = cls(path, state, lock, checkpoint_interval, progress, created)
            writer.checkpoint()
        except OSError as exc:
            _discard(path, lock, created)
            raise DatasetFileError(f"{path}: cannot write: {exc}") from None
        except BaseException:
            _discard(path, lock, created)
            raise
        return writer

    def pending(self) -> np.ndarray:
        """Indices of the samples still to solve, ascending, int64."""
        return np.flatnonzero(self.state.status == PENDING).astype(np.int64)

    def record(self, result: Any) -> None:
        """Store one sample's result (a :class:`datasets.generate.SampleResult`)."""
        s, i = self.state, result.index
        if s.status[i] != PENDING:
            raise RuntimeError(f"sample {i} was recorded twice")
        s.c[i] = result.c if result.status == OK else np.nan
        s.solve_time[i] = result.solve_time
        s.attempts[i] = result.attempts
        s.solver_rank[i] = result.rank
        s.failure_reason[i] = result.reason
        s.status[i] = result.status  # last: an interrupted record() leaves the sample pending
        self.n_recorded += 1
        self._bar.update(1)
        if result.status == FAILED:
            self._bar.set_postfix(failed=int(np.count_nonzero(s.status == FAILED)))

    def maybe_checkpoint(self) -> None:
        """Write a checkpoint if the last one is old enough."""
        if time.perf_counter() >= self._next_checkpoint:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Atomically replace the file with the current state."""
        start = time.perf_counter()
        self._runs[-1]["solved"] = self.n_recorded
        self.state.attrs.update(updated=now(), runs=json.dumps(self._runs))
        try:
            write_atomic(self.path, self.state)
        except OSError as exc:
            error = write_error(self.path, exc, self.state)
            self.abandon()
            raise error from None
        end = time.perf_counter()
        self._next_checkpoint = end + max(self._interval,
                                          CHECKPOINT_COST_FACTOR * (end - start))

    def finish(self, split: SplitSpec) -> dict[str, int]:
        """Draw the splits if no sample is pending, mark the file complete and write it.

        Returns
        -------
        dict
            Size of each split (empty if samples are still pending).
        """
        s = self.state
        complete = not np.any(s.status == PENDING)
        splits = make_splits(s.status == OK, split, int(s.attrs["seed"])) if complete else None
        if splits is not None:
            s.splits = splits
        s.attrs["complete"] = complete
        self._runs[-1]["finished"] = now()
        self.checkpoint()
        self.close()
        return {name: int(splits[name].size) for name in SPLIT_NAMES} if splits is not None else {}

    def close(self) -> None:
        """Close the progress bar and release the lock."""
        self._bar.close()
        self._lock.close()

    def abandon(self) -> None:
        """Close after an error: as :meth:`close`, and if no file was ever written, remove the
        lock file and the folders this job created for it."""
        self._bar.close()
        _discard(self.path, self._lock, self._created)


def _discard(path: Path, lock: IO[str], created: list[Path]) -> None:
    """Release the lock; if ``path`` does not exist (nothing to resume), also remove the lock
    file and the folders created for the output, so an error leaves nothing behind."""
    if not path.exists():
        Path(lock.name).unlink(missing_ok=True)
        remove_folders(created)
    lock.close()


def write_error(path: Path, exc: OSError, state: DatasetState) -> DatasetWriteError:
    """A clear message for a failed checkpoint: what failed, free space, what is left."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or "space" in str(exc).lower()
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    need = state.y.nbytes + state.c.nbytes
    if free is not None and free < need:
        full = True
    reason = exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    text = f"{path}: cannot write the dataset: "
    text += ("the disk is full" if full else reason)
    if free is not None:
        text += f" ({format_bytes(free)} free in {path.parent}, the file needs about " \
                f"{format_bytes(need)})"
    if path.exists():
        text += "; the previous version of the file is intact and holds the samples of the " \
                "last checkpoint; free some space and run the same command again to resume"
    else:
        text += "; no file was written"
    return DatasetWriteError(text + " (temporary file removed)")


def _acquire_lock(path: Path) -> IO[str]:
    lock_path = path.with_name(path.name + ".lock")
    lock = lock_path.open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DatasetFileError(f"{path}: another running job is writing this file (lock "
                               f"{lock_path} is held by a generate-dataset or evaluate-surrogate "
                               "process); wait for it to finish, or use another output") from None
    except OSError:
        pass  # a file system without flock: go on unlocked
    return lock


def _new_attrs(config: dict[str, Any]) -> dict[str, Any]:
    gen = config["generation"]
    return {"problem": config["problem"], "config": json.dumps(config, sort_keys=True),
            "seed": gen["seed"], "n_samples": gen["samples"],
            "ranks_per_sample": gen["ranks_per_sample"], "created": now(), "complete": False,
            "runs": "[]"}


def config_changes(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """What differs between a file's stored configuration and the requested one, one line per
    difference (:func:`datasets.config.differences`); the ``plugin`` entries are compared by
    :func:`solvers.plugins.identity_changes` (a file plugin that moved but kept its content,
    or a spec spelled differently, is the same plugin).

    A file made before problems were plugins has neither ``plugin`` nor ``facts``: for the
    package's own (registered) problems those two entries are then not compared.
    """
    from solvers.plugins import identity_changes

    requested = dict(requested)
    plugin = requested.pop("plugin", None)
    if "plugin" not in stored and "facts" not in stored and plugin is not None \
            and plugin.get("kind") == "registered":
        requested.pop("facts", None)
        return differences(stored, requested)
    stored = dict(stored)
    recorded = stored.pop("plugin", None)
    out = differences(stored, requested)
    if isinstance(recorded, dict) and plugin is not None:
        out += [f"plugin: {change}" for change in identity_changes(recorded, plugin)]
    elif recorded != plugin:
        out += differences({"plugin": recorded}, {"plugin": plugin})
    return out


def _resume_state(path: Path, config: dict[str, Any], y: np.ndarray) -> DatasetState:
    try:
        state = read_state(path)
    except DatasetFileError as exc:
        raise DatasetFileError(f"{exc}; not resuming into it (remove it or choose another "
                               f"--out)") from None
    diff = config_changes(state.config, config)
    if diff:
        raise ConfigMismatchError(
            f"{path} was started with a different configuration; not resuming into it "
            f"(use the same options, or another --out):\n  " + "\n  ".join(diff))
    same_shape = state.y.shape == y.shape
    bad = np.flatnonzero(np.any(state.y != y, axis=1)) if same_shape else np.arange(len(y))
    if bad.size:
        raise ConfigMismatchError(
            f"{path}: the parameters stored for sample {bad[0]} ({bad.size} samples in all) "
            f"differ from those this code draws for the same seed; not resuming into it")
    return state
