"""Fixtures of tests/train: the shared torch fixtures."""

from tests.torch_fixtures import _one_thread, device, dtype  # noqa: F401
