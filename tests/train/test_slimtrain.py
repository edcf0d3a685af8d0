"""slimTik / sGCV against explicit vectorised (Kronecker) matrices, and slimTrain training:
sTik = Tikhonov after one epoch, slimTrain vs ADAM, resume, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import train.cli as cli
import train.run as train_run
from surrogate import NeuralODE, SeparableModel, load
from surrogate.resnet import ResNet
from surrogate.separable import augment
from tests.train.synthetic import student, teacher_data
from train.adam import Adam
from train.config import ConfigError, merge_config, resolve_config
from train.multilevel import Monitor
from train.slimtik import SlimTik, factor_step, select_lambda
from train.slimtrain import SlimTrain, lambda_image, read_lambda_history

F64 = torch.float64


def random_case(b: int, p: int, m: int, r: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    Z_mem = torch.randn(r * b, p, generator=g, dtype=F64) if r else None
    Z_a = augment(torch.randn(b, p - 1, generator=g, dtype=F64))
    C = torch.randn(b, m, generator=g, dtype=F64)
    W = torch.randn(m, p, generator=g, dtype=F64)
    return Z_mem, Z_a, C, W


def explicit_system(Z_mem, Z_a, C, W, s, Lam):
    """The vectorised slimTik system of eq. 3.7 written out with A_k = Z_a (x) I_m, w = vec(W)
    (column-major), b_k = vec(C^T); returns (A_k, M_k, T_k(Lambda), b_k, w_prev, w_k)."""
    m, p = W.shape
    eye = torch.eye(m, dtype=F64)
    A = torch.kron(Z_a, eye)                                   # (b m, p m)
    M = torch.kron(Z_mem, eye) if Z_mem is not None else torch.zeros(0, p * m, dtype=F64)
    w = W.T.reshape(-1)
    bk = C.reshape(-1)
    L = s + Lam
    big = torch.cat([M, A, math.sqrt(L) * torch.eye(p * m, dtype=F64)])
    rhs = torch.cat([M @ w, bk, (s / math.sqrt(L)) * w])
    wk = torch.linalg.lstsq(big, rhs[:, None], driver="gelsd").solution[:, 0]
    T = torch.linalg.inv(L * torch.eye(p * m, dtype=F64) + M.T @ M + A.T @ A)   # eq. 3.5
    return A, M, T, bk, w, wk


@pytest.mark.parametrize("b, p, m, r", [(4, 6, 3, 2), (3, 7, 5, 0), (5, 4, 2, 1)])
def test_kronecker_update_equals_the_explicit_vectorised_one(b, p, m, r):
    """(3, 7, 5, 0): (r + 1) b < p, the complement of the feature row space matters."""
    Z_mem, Z_a, C, W = random_case(b, p, m, r, seed=b + p)
    s = 0.37
    step = factor_step(Z_mem, Z_a, C, W, s)
    for Lam in (-0.15, 1e-6, 0.05, 2.0, 300.0):             # s + Lambda > 0
        *_, wk = explicit_system(Z_mem, Z_a, C, W, s, Lam)
        W_explicit = wk.reshape(p, m).T
        torch.testing.assert_close(step.weights(Lam), W_explicit, rtol=1e-10, atol=1e-10)
    # the update form (eq. 3.3 with T_k of eq. 3.5) gives the same W_k
    A, _, T, bk, w, _ = explicit_system(Z_mem, Z_a, C, W, s, 0.05)
    w_upd = w - T @ (A.T @ (A @ w - bk) + 0.05 * w)
    torch.testing.assert_close(step.weights(0.05), w_upd.reshape(p, m).T, rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("b, p, m, r", [(4, 6, 3, 2), (3, 7, 5, 0), (6, 5, 4, 1)])
def test_sgcv_equals_brute_force_gcv_of_the_vectorised_system(b, p, m, r):
    Z_mem, Z_a, C, W = random_case(b, p, m, r, seed=10 + b)
    s = 0.2
    step = factor_step(Z_mem, Z_a, C, W, s)
    lams = np.array([-0.09, 1e-5, 1e-2, 0.3, 4.0, 70.0])
    brute = []
    for Lam in lams:
        A, _, T, bk, _, wk = explicit_system(Z_mem, Z_a, C, W, s, float(Lam))
        n = A.shape[0]                                         # rows: b x m
        res = float(((A @ wk - bk) ** 2).sum())
        brute.append(n * res / (n - float(torch.trace(A @ T @ A.T))) ** 2)   # eq. 3.4
    assert step.n_rows == b * m == A.shape[0]
    np.testing.assert_allclose(step.sgcv(lams), brute, rtol=1e-9)
    # the selected Lambda minimises the brute-force sGCV over the candidates: positive in
    # [1e-8, 1e4], negative in [-s/2, -1e-8] (or positive only)
    pos = np.logspace(-8, 4, 1201)
    cands = np.concatenate([pos, -np.logspace(-8, math.log10(s / 2), 801)])
    for allow_negative, grid in ((True, cands), (False, pos)):
        chosen = select_lambda(step, 1e-8, 1e4, allow_negative=allow_negative)
        assert (1e-8 <= chosen <= 1e4) or (allow_negative and -s / 2 <= chosen <= -1e-8)
        assert step.sgcv(np.array([chosen]))[0] <= step.sgcv(grid).min() * (1 + 1e-6)


def tikhonov(Z_a: torch.Tensor, C: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_W ||Z_a W^T - C||_F^2 + lam ||W||_F^2, shape (m, p)."""
    p = Z_a.shape[1]
    return torch.linalg.solve(Z_a.T @ Z_a + lam * torch.eye(p, dtype=F64), Z_a.T @ C).T


@pytest.mark.parametrize("fixed", [0.3, None], ids=["fixed-lambda", "sgcv"])
def test_stik_after_one_epoch_is_tikhonov_with_the_sum_of_lambdas(fixed):
    """slimTrain section 3.1: memory covering every batch (sTik) and theta frozen (lr = 0):
    after one epoch W is the Tikhonov solution on all samples with lambda = sum Lambda_i."""
    Y, C = teacher_data(n=42, n_out=6)
    model = student(n_out=6)
    n_batches = math.ceil(42 / 5)
    opt = SlimTrain(epochs=1, lr=0.0, batch_size=5, memory=n_batches - 1, lambda_fixed=fixed,
                    alpha1=0.0)
    with torch.no_grad():
        Z_a = augment(model.features(Y))
    opt.fit(model, Y, C)
    assert len(opt.lambdas_) == n_batches
    lam = sum(opt.lambdas_)
    if fixed is not None:
        assert lam == pytest.approx(n_batches * fixed, rel=1e-14)
    else:
        assert len(set(opt.lambdas_)) > 1                     # sGCV chose varying Lambdas
    assert opt.lambda_sum_ == pytest.approx(lam, rel=1e-14)
    torch.testing.assert_close(model.W.detach(), tikhonov(Z_a, C, lam), rtol=1e-9, atol=1e-11)
    # with a shorter memory (slimTik) it is not
    model2 = student(n_out=6)
    SlimTrain(epochs=1, lr=0.0, batch_size=5, memory=1, lambda_fixed=0.3).fit(model2, Y, C)
    assert (model2.W.detach() - tikhonov(Z_a, C, 0.3 * n_batches)).abs().max() > 1e-3


def test_slimtrain_reaches_a_lower_loss_than_adam_after_the_same_epochs():
    """Same batch size and epochs, ADAM's default learning rate 1e-3 for both (ADAM even
    starts from the VarPro solve of W)."""
    Y, C = teacher_data(n=64, n_out=20)
    epochs = 15
    losses = {}
    for opt in (Adam(max_work_units=1 + 2 * epochs, batch_size=8, lr=1e-3),
                SlimTrain(epochs=epochs, batch_size=8, lr=1e-3)):
        mon = Monitor(opt.method, Y, C, None, stream=None)
        opt.fit(student(n_out=20), Y, C, counter=mon.counter, callback=mon,
                init_linear=opt.needs_linear_init)
        rows = mon.history.rows
        assert rows[-1]["iteration"] == epochs
        losses[opt.method] = rows[-1]["loss"]
    assert losses["slimtrain"] < 0.8 * losses["adam"], losses


def test_work_units_determinism_and_lambda_history():
    Y, C = teacher_data(n=40)

    def once():
        mon = Monitor("slimtrain", Y, C, None, stream=None)
        opt = SlimTrain(epochs=3, batch_size=16, seed=4)
        opt.fit(student(), Y, C, counter=mon.counter, callback=mon)
        return opt, mon.history.rows

    (a, rows_a), (b, rows_b) = once(), once()
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert a.lambdas_ == b.lambdas_
    # 2 work units per epoch (3 batches of 16, 16, 8 of 40 samples, forward + backward)
    assert [r["work_units"] for r in rows_a] == pytest.approx([0, 2, 4, 6])
    hist = a.lambda_history()
    assert [(r["epoch"], r["batch"]) for r in hist] == [(e, k) for e in (1, 2, 3)
                                                        for k in (1, 2, 3)]
    assert hist[-1]["Lambda_sum"] == pytest.approx(a.lambda_sum_) and a.lambda_sum_ > 0
    assert all(1e-8 <= abs(v) <= 1e4 for v in a.lambdas_)
    sums = np.cumsum(a.lambdas_)
    assert (sums > 0).all() and (np.array(a.lambdas_[1:]) >= -sums[:-1] / 2).all()
    img = lambda_image(hist)
    assert img.shape == (3, 3) and np.allclose(img[:, 0], np.log10(np.abs(a.lambdas_[:3])))


@pytest.mark.parametrize("arch", ["resnet", "neural_ode"])
def test_both_extractors_dtypes_and_devices(arch, dtype, device):
    Y, C = teacher_data(n=32, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(1)
    feats = (ResNet(3, 6, 3, generator=g, dtype=dtype, device=device) if arch == "resnet"
             else NeuralODE(3, 6, 2, generator=g, dtype=dtype, device=device))
    model = SeparableModel(feats, 5)
    mon = Monitor("slimtrain", Y, C, None, stream=None)
    opt = SlimTrain(epochs=4, batch_size=8, memory=1).fit(model, Y, C, counter=mon.counter,
                                                          callback=mon)
    rows = mon.history.rows
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert model.W.dtype == dtype and model.W.device.type == device
    torch.testing.assert_close(model.W.detach(), opt._tik.W.to(dtype))


def test_settings_are_checked():
    Y, C = teacher_data(n=16)
    with pytest.raises(ValueError, match="Lambda bounds"):
        SlimTrain(lambda_min=1.0, lambda_max=0.1).fit(student(), Y, C)
    with pytest.raises(ValueError, match="memory depth r = -1"):
        SlimTik(torch.zeros(2, 3), memory=-1)
    step = factor_step(None, *random_case(3, 4, 2, 0)[1:], 0.0)
    with pytest.raises(ValueError, match="must stay positive"):
        step.weights(0.0)
    with pytest.raises(ConfigError, match="slimtrain.lambda_min"):
        merge_config({"slimtrain": {"lambda_min": 10.0, "lambda_max": 1.0}})
    with pytest.raises(ConfigError, match="slimtrain.memory = -2: must be >= 0"):
        merge_config({"slimtrain": {"memory": -2}})
    with pytest.raises(ConfigError, match="must be one of"):
        merge_config({"slimtrain": {"regularization": "gcv"}})
    cdr = resolve_config(merge_config({}), "cdr", seed=0)["slimtrain"]
    assert (cdr["architecture"], cdr["width"], cdr["depth"], cdr["batch_size"], cdr["lr"],
            cdr["memory"], cdr["epochs"]) == ("resnet", 16, 8, 10, 1e-2, 0, 300)


# ---- command line -------------------------------------------------------------------------

TINY = """
[model]
final_time = 2.0
[slimtrain]
width = 4
depth = 2
epochs = 4
batch_size = 8
memory = 1
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_cli_slimtrain_writes_the_outputs(data, tiny, tmp_path, capsys):
    out = tmp_path / "m"
    assert cli.main(["--data", str(data), "--method", "slimtrain", "--config", str(tiny),
                     "--out", str(out)]) == 0
    assert "slimTrain" in capsys.readouterr().out
    for name in ("weights.npz", "metadata.json", "history.csv", "convergence.png",
                 "summary.json", "summary.txt", "lambda_history.csv", "lambda.png"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint").exists()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model"]["features"]["architecture"] == "resnet"
    assert meta["model"]["features"]["n_steps"] == 2
    lam = read_lambda_history(out / "lambda_history.csv")
    assert len(lam) == 4 * math.ceil(40 / 8)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["slimtrain"]["lambda_sum"] == pytest.approx(sum(r["Lambda"] for r in lam))
    assert summary["work_units"] == pytest.approx(8.0)


def test_resume_after_interruption_matches_an_uninterrupted_run(data, tiny, tmp_path,
                                                                monkeypatch):
    args = ["--data", str(data), "--method", "slimtrain", "--config", str(tiny), "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "ref")]) == 0
    real_save = train_run.save_checkpoint
    calls = []

    def save_then_crash(*a, **kw):
        real_save(*a, **kw)
        calls.append(1)
        if len(calls) == 2:                                    # after epoch 2 of 4
            raise KeyboardInterrupt

    monkeypatch.setattr(train_run, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*args, "--out", str(tmp_path / "run")])
    monkeypatch.setattr(train_run, "save_checkpoint", real_save)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["optimizer"]["epoch"] == 2 and state["completed_levels"] == 0
    assert cli.main([*args, "--resume", "--out", str(tmp_path / "run")]) == 0

    def rows(d, name, keys):
        with open(d / name) as fh:
            return [tuple(r[k] for k in keys) for r in csv.DictReader(fh)]

    for d in ("ref", "run"):
        assert len(rows(tmp_path / d, "history.csv", ["iteration"])) == 5
    keys = ["iteration", "loss", "val_loss", "work_units"]
    assert rows(tmp_path / "run", "history.csv", keys) == rows(tmp_path / "ref", "history.csv",
                                                               keys)
    lam = ["step", "Lambda", "Lambda_sum"]
    assert rows(tmp_path / "run", "lambda_history.csv", lam) == rows(
        tmp_path / "ref", "lambda_history.csv", lam)
    y = np.random.default_rng(0).uniform(size=(5, 4))
    assert np.array_equal(load(tmp_path / "run").predict(y),
                          load(tmp_path / "ref").predict(y))
