"""A tiny real DCR surrogate for the UQ tests: a coarse generate-dataset run (12 x 12 x 6 mesh,
60 samples, real solver) and a short GNvpro training with train-surrogate, made once per
session and shared by tests/surrogate, tests/solvers and tests/examples."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

DCR_COARSE = {"n_cells": [12, 12, 6]}
TINY_TRAIN = """
[model]
width = 8
levels = [2, 4]
[gnvpro]
work_units_per_level = 20
r_max = 5
"""


@functools.cache
def tiny_dcr(root: Path) -> tuple[Path, Path]:
    """(dataset path, model directory) under ``root``; built on the first call only."""
    import train.cli

    root.mkdir(parents=True, exist_ok=True)
    data, model = root / "dcr.h5", root / "model"
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "generate-dataset"), "dcr", "--samples", "60",
                           "--seed", "3", "--no-progress", "--out", str(data),
                           "--set", "n_cells=[12,12,6]"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (root / "tiny.toml").write_text(TINY_TRAIN)
    rc = train.cli.main(["--data", str(data), "--method", "gnvpro", "--config",
                         str(root / "tiny.toml"), "--out", str(model), "--quiet"])
    assert rc == 0
    return data, model
