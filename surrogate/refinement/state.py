"""``DIR/state.json``: the finished rounds of a refinement run (resume) and its identity.

Written atomically after every finished round (and when the run stops). A rerun with the
same options reads it and continues with the next round; a run with different options (or
another starting model or data) is refused, naming the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solvers.common.atomic import write_text_atomic
from solvers.errors import UsageError

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass
class RefineState:
    """The run's record.

    Attributes
    ----------
    fingerprint : str
    rounds : list of dict
        One entry per finished round (round 0: the starting model on the check set).
    stop_reason : str or None
        "target", "budget" once the run has stopped.
    """

    fingerprint: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def n_added(self) -> int:
        """Training solves added so far."""
        return int(self.rounds[-1]["n_added"]) if self.rounds else 0

    def save(self, out: Path) -> None:
        write_text_atomic(out / STATE_FILE, json.dumps(
            {"version": STATE_VERSION, "fingerprint": self.fingerprint, "rounds": self.rounds,
             "stop_reason": self.stop_reason}, indent=2) + "\n")


def open_state(out: Path, fingerprint: str) -> RefineState:
    """The state of ``out`` (created, empty, if there is none).

    Raises
    ------
    UsageError
        ``out`` is not a folder, holds a state of another run, or an unreadable one.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    path = out / STATE_FILE
    if not path.exists():
        if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
            raise UsageError(f"--out {out}: a folder with other files and no {STATE_FILE}; "
                             "choose an empty or new folder")
        out.mkdir(parents=True, exist_ok=True)
        state = RefineState(fingerprint)
        state.save(out)
        return state
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("version") != STATE_VERSION or not isinstance(raw.get("rounds"), list):
            raise ValueError("unknown version or layout")
    except (OSError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path}: unreadable refinement state ({exc}); choose another --out"
                         ) from None
    if raw.get("fingerprint") != fingerprint:
        raise UsageError(f"--out {out} holds a refinement run with other options, another "
                         "starting model or other data; rerun that command to continue it, or "
                         "choose another --out")
    return RefineState(fingerprint, raw["rounds"], raw.get("stop_reason"))
