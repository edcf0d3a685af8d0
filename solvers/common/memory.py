"""Memory available to this process and the guard used before large allocations."""

from __future__ import annotations

import os
from pathlib import Path

from solvers.errors import InputError, SolverSettingsError


def available_memory() -> int:
    """Bytes of memory this process can still use: MemAvailable of /proc/meminfo, capped by
    the cgroup (v2 or v1) limit minus its usage; the physical memory if neither is known."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                candidates.append(int(limit) - int(Path(usage_file).read_text()))
        except (OSError, ValueError):
            continue
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError):
            return 1 << 62
    return max(min(candidates), 0)


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def check_memory(estimate: float, what: str, *, ranks_on_node: int = 1,
                 error: type[InputError] = SolverSettingsError) -> None:
    """Refuse (``error``, by default SolverSettingsError) a set-up whose estimated memory
    cannot fit.

    Parameters
    ----------
    estimate : float
        Estimated bytes needed by one process.
    what : str
        The setting(s) responsible, e.g. ``"n_cells = 100000 (1e10 cells)"``.
    ranks_on_node : int
        Processes on this node that each need ``estimate``.
    """
    free = available_memory()
    if estimate * ranks_on_node > free:
        per = f" per rank x {ranks_on_node} ranks" if ranks_on_node > 1 else ""
        raise error(
            f"{what} needs about {format_bytes(estimate)}{per}, but only {format_bytes(free)} "
            "of memory is available")
