"""A per-sample time limit for solves that hang (``generate-dataset --sample-timeout``).

:func:`time_limit` arms a real-time interval timer (``signal.setitimer(ITIMER_REAL)``) around
one solve; when it expires, the SIGALRM handler raises :class:`SampleTimeout` in the main
thread of the solving rank, which unwinds the solve. The dataset engine records the sample as
failed ("timed out after S s") and goes on with a freshly built solver (the interrupted one
may have been left half-way through a solve).

Limits (the timer can only interrupt Python):

* Python code and the waits Python makes interruptible (``time.sleep``, socket and HTTP I/O,
  subprocess waits, most blocking calls of the standard library) are interrupted on time.
* Compiled code that never returns to the interpreter (a C/Fortran loop, a PETSc solve, a
  blocking MPI call) is interrupted only when it returns; a call that never returns hangs on.
  Such solvers need their own limits (e.g. an iteration cap that raises).
* Collective solves (``--ranks-per-sample K`` > 1): each rank's timer fires on its own, at a
  point that may differ between the ranks of a group (or not at all, on a rank waiting inside
  MPI), so the group's communicator cannot be trusted afterwards. A timeout there therefore
  ends the job like a broken plugin (exit status 1), with every result up to then saved and
  resumable; on one rank per sample the job goes on.
* Only the main thread receives signals; elsewhere (or without SIGALRM) no limit is set.

:class:`SampleTimeout` derives from BaseException (like KeyboardInterrupt), so a solver's own
``except Exception`` does not swallow it.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from typing import Any


class SampleTimeout(BaseException):
    """A solve ran past its time limit (raised by :func:`time_limit`'s SIGALRM handler).

    Attributes
    ----------
    seconds : float
        The limit.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"timed out after {seconds:g} s")


def check_timeout(seconds: Any) -> float | None:
    """``seconds`` as a positive finite float (None: no limit), else ValueError naming it."""
    if seconds is None:
        return None
    try:
        value = float(seconds) if not isinstance(seconds, bool | str) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--sample-timeout must be a number of seconds > 0, got {seconds!r}")
    return value


def can_time_out() -> bool:
    """Whether :func:`time_limit` can interrupt here (main thread, SIGALRM available)."""
    return hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`SampleTimeout` inside the block once it has run ``seconds`` (wall time).

    ``seconds`` None, or a thread other than the main one: no limit. The previous SIGALRM
    handler (e.g. PETSc's) and timer are restored on exit.
    """
    if seconds is None or not can_time_out():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        raise SampleTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


__all__ = ["SampleTimeout", "can_time_out", "check_timeout", "time_limit"]
