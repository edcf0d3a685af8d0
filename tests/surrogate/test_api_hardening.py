"""``surrogate.load`` under threads and at the edges of the batch size (issue 20).

Every public method of SurrogateModel may be called from many threads at once: the results
must equal sequential calls bitwise (torch forward-mode AD levels are process-global; they
used to corrupt each other: "forward AD level" errors and relative errors of 1.0). Empty
batches give empty results of the usual shapes; a batch whose result cannot fit in memory is
refused; large torch batches run in blocks with the same values.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import surrogate
import surrogate.uq_model as uq_model
from solvers.common import memory
from surrogate import NeuralODE, Normalizer, SeparableModel, save_surrogate

BOX = {"names": ["a", "b", "c"], "lower": [0.0, -1.0, 0.5], "upper": [1.0, 1.0, 2.0],
       "box": "training split min/max, physical units"}
N_THREADS = 8
N_ROWS = 24              # > fast_max_batch (16): the torch path for a float64 model too


def saved_model(folder, dtype: torch.dtype, n_out: int = 7):
    g = torch.Generator().manual_seed(5)
    norm = Normalizer(3, n_out, center_targets=True).fit(
        torch.rand(30, 3, dtype=torch.float64, generator=g) * 2,
        3 + torch.rand(30, n_out, dtype=torch.float64, generator=g))
    model = SeparableModel(NeuralODE(3, 6, 4, generator=g, dtype=dtype), n_out, norm)
    with torch.no_grad():
        model.W.normal_(generator=g)
    save_surrogate(model, folder, {"method": "test"},
                   extra={"inputs": BOX, "outputs": {"names": None, "coords": {}}})
    return surrogate.load(folder)


def inside(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(BOX["lower"]), np.array(BOX["upper"])
    return lo + (hi - lo) * rng.random((n, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_every_method_from_eight_threads_equals_sequential(tmp_path, dtype):
    m = saved_model(tmp_path / "m", dtype)
    rng = np.random.default_rng(1)
    ys = [inside(N_ROWS, seed=s) for s in range(32)]
    vs = [rng.normal(size=(N_ROWS, 3)) for _ in ys]
    ws = [rng.normal(size=(N_ROWS, 7)) for _ in ys]
    calls = {
        "__call__": lambda i: m(ys[i]),
        "predict": lambda i: m.predict(ys[i]),
        "jacobian": lambda i: m.jacobian(ys[i]),
        "value_and_jacobian": lambda i: np.concatenate(
            [a.reshape(-1) for a in m.value_and_jacobian(ys[i])]),
        "jvp": lambda i: m.jvp(ys[i], vs[i]),
        "vjp": lambda i: m.vjp(ys[i], ws[i]),
        "jvp one row": lambda i: m.jvp(ys[i][0], vs[i][0]),
    }
    for name, call in calls.items():
        sequential = [call(i) for i in range(len(ys))]
        with ThreadPoolExecutor(N_THREADS) as pool:
            threaded = list(pool.map(call, range(len(ys))))
        for i, (a, b) in enumerate(zip(sequential, threaded, strict=True)):
            np.testing.assert_array_equal(b, a, err_msg=f"{name}, batch {i}")


def test_empty_batches_give_empty_results(tmp_path):
    for dtype in (torch.float64, torch.float32):           # NumPy mirror and torch path
        m = saved_model(tmp_path / str(dtype), dtype)
        e = np.empty((0, 3))
        assert m(e).shape == (0, 7) and m.predict(e).shape == (0, 7)
        assert m.jacobian(e).shape == (0, 7, 3)
        c, J = m.value_and_jacobian(e)
        assert c.shape == (0, 7) and J.shape == (0, 7, 3)
        assert m.jvp(e, np.ones(3)).shape == (0, 7) and m.jvp(e, e).shape == (0, 7)
        assert m.vjp(e, np.ones(7)).shape == (0, 3)
        assert m.vjp(e, np.empty((0, 7))).shape == (0, 3)


def test_batches_that_cannot_fit_are_refused(tmp_path, monkeypatch):
    """A million rows on a machine with 64 MiB free: refused with the row count, before any
    allocation of the result."""
    m = saved_model(tmp_path / "m", torch.float64)
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**20)
    y = np.tile(inside(1, seed=0), (1_000_000, 1))
    for call, what in ((lambda: m.jacobian(y), "a Jacobian of 1000000 samples"),
                       (lambda: m.value_and_jacobian(y), "a Jacobian of 1000000 samples"),
                       (lambda: m(y), "a prediction of 1000000 samples"),
                       (lambda: m.predict(y), "a prediction of 1000000 samples"),
                       (lambda: m.jvp(y, np.ones(3)), "a Jacobian-vector product"),
                       (lambda: m.vjp(y, np.ones(7)), "a vector-Jacobian product")):
        with pytest.raises(ValueError, match=what) as info:
            call()
        assert "of memory is available" in str(info.value)
    assert m(y[:1000]).shape == (1000, 7)                  # small batches still run


def test_torch_path_in_blocks_gives_the_same_values(tmp_path, monkeypatch):
    m = saved_model(tmp_path / "m", torch.float32)
    y = inside(40, seed=3)
    v, w = np.ones((40, 3)), np.ones((40, 7))
    whole = (m(y), m.jacobian(y), m.jvp(y, v), m.vjp(y, w))
    monkeypatch.setattr(uq_model, "TORCH_BLOCK", 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blocked = (m(y), m.jacobian(y), m.jvp(y, v), m.vjp(y, w))
    for a, b in zip(whole, blocked, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())  # float32
