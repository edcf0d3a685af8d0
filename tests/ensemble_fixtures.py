"""A tiny real DCR ensemble for the issue-19 tests: a coarse generate-dataset run (12 x 12 x 6
mesh, 120 samples, real solver), a fresh 40-sample file, and a 3-member GNvpro ensemble
trained by train-surrogate --ensemble 3 on a short budget; made once per session."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from tests.uq_fixtures import TINY_TRAIN

COARSE = "n_cells=[12,12,6]"


def generate(out: Path, samples: int, seed: int) -> Path:
    """``generate-dataset dcr`` on the coarse mesh (a real subprocess run)."""
    proc = subprocess.run([sys.executable, "-m", "datasets.cli", "dcr", "--samples",
                           str(samples), "--seed", str(seed), "--no-progress", "--out",
                           str(out), "--set", COARSE],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


@functools.cache
def tiny_ensemble(root: Path) -> tuple[Path, Path, Path]:
    """(dataset, fresh dataset, ensemble directory) under ``root``; built on the first call."""
    import train.cli

    root.mkdir(parents=True, exist_ok=True)
    data = generate(root / "dcr.h5", 120, 3)
    fresh = generate(root / "fresh.h5", 40, 5)
    (root / "tiny.toml").write_text(TINY_TRAIN)
    model = root / "ensemble"
    rc = train.cli.main(["--data", str(data), "--method", "gnvpro", "--config",
                         str(root / "tiny.toml"), "--ensemble", "3", "--out", str(model),
                         "--quiet", "--threads", "1"])
    assert rc == 0
    return data, fresh, model
