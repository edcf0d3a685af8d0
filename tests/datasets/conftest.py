"""Fixtures of the dataset tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datasets.cli_helpers import COARSE, N_SAMPLES, run_cli


@pytest.fixture(scope="package")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 1-rank dataset of N_SAMPLES coarse CDR samples."""
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    proc = run_cli([*COARSE, "--samples", N_SAMPLES, "--out", out])
    assert proc.returncode == 0, proc.stderr
    return out
