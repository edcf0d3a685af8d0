"""Fixtures of tests/train: the shared torch fixtures and a small synthetic data file."""

from pathlib import Path

import pytest

from tests.torch_fixtures import _one_thread, device, dtype  # noqa: F401
from tests.train.synthetic import write_npz


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A small generated separable dataset as .npz (80 samples, y and c)."""
    path = tmp_path / "small.npz"
    write_npz(path)
    return path
