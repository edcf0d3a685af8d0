"""Data-driven defaults and the time budget of issue 18: the width rule on targets of known
rank, target scaling chosen from the spread of the outputs, per-output scaling against a
global one on well-scaled data, --time-budget stops on time, the scale-free summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import surrogate
from datasets.split_data import SplitData
from train import budget
from train.auto import (
    data_width,
    projection_floor,
    selection_score,
    spectrum_width,
    target_scaling,
)
from train.cli import main as train_main
from train.config import merge_config, resolve_config


def rank_r_targets(n: int = 300, n_in: int = 5, m: int = 40, r: int = 12, seed: int = 0,
                   scales: np.ndarray | None = None) -> np.ndarray:
    """Targets c = 3 + tanh(y A) B: centred rank exactly r (generic A, B)."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, size=(n, n_in))
    c = 3.0 + np.tanh(y @ rng.normal(size=(n_in, r))) @ rng.normal(size=(r, m))
    return c * (1.0 if scales is None else scales)


def split_data(c: np.ndarray, n_in: int = 5, problem: str = "unknown") -> SplitData:
    """Training split only (targets c, zero inputs)."""
    n = c.shape[0]
    return SplitData(y={"train": np.zeros((n, n_in)), "validation": np.zeros((0, n_in)),
                        "test": np.zeros((0, n_in))},
                     c={"train": c, "validation": c[:0], "test": c[:0]}, problem=problem,
                     split_source="seeded")


def test_width_rule_finds_the_target_rank() -> None:
    c = rank_r_targets(r=12)
    floor = projection_floor(c - c.mean(axis=0))
    assert floor[0] == pytest.approx(1.0) and floor[11] > 1e-3 and floor[12] < 1e-12
    assert spectrum_width(c, "global", 1e-8, 1, 64) == 12
    # the rank does not depend on the units of the outputs: per-output scaling keeps it
    scaled = rank_r_targets(r=12, scales=np.logspace(-2, 3, 40))
    assert spectrum_width(scaled, "per_output", 1e-8, 1, 64) == 12
    # bounds
    assert spectrum_width(c, "global", 1e-8, 16, 64) == 16
    assert spectrum_width(c, "global", 1e-8, 1, 8) == 8
    # a looser tolerance needs fewer directions
    assert spectrum_width(c, "global", 0.1, 1, 64) < 12


def test_default_width_of_unknown_problems() -> None:
    """The larger of the spectrum width and the data width; paper preset and CDR/DCR keep
    their fixed widths."""
    cfg = merge_config({})
    rank40 = split_data(rank_r_targets(n=2000, m=60, r=40))
    assert resolve_config(cfg, "unknown", 0, data=rank40)["model"]["width"] == 64  # data: 64
    few = split_data(rank_r_targets(n=100, m=60, r=40))                # 6000 target values
    w = resolve_config(cfg, "unknown", 0, data=few)["model"]["width"]
    assert w == max(spectrum_width(few.c["train"], "global", 1e-3, 8, 64),
                    data_width(100, 60, 5, 8))
    assert w >= 39 > data_width(100, 60, 5, 8)                            # the rank wins
    small = split_data(rank_r_targets(n=100, m=6, r=3))                 # 600 values
    assert resolve_config(cfg, "unknown", 0, data=small)["model"]["width"] == 8
    assert resolve_config(cfg, "unknown", 0, data=None)["model"]["width"] == 8
    assert resolve_config(cfg, "unknown", 0, preset="paper", data=rank40)["model"][
        "width"] == 8
    assert resolve_config(cfg, "cdr", 0, data=rank40)["model"]["width"] == 10


def test_data_width_keeps_fewer_weights_than_target_values() -> None:
    from train.resources import parameter_count

    w = data_width(n_train=1000, n_out=10, n_in=15, n_steps=8, lower=8, upper=64)
    assert parameter_count("neural_ode", 15, w, 8) <= 1000 * 10
    assert parameter_count("neural_ode", 15, w + 8, 8) > 1000 * 10
    assert data_width(10, 2, 15, 8, lower=8, upper=64) == 8           # never below lower
    assert data_width(10**6, 800, 3, 8, lower=8, upper=64) == 64      # nor above upper


def test_target_scaling_rule() -> None:
    c = rank_r_targets()
    c = 3.0 + (c - c.mean(axis=0)) / c.std(axis=0)                     # equal spreads
    assert target_scaling(c) == "global"
    assert target_scaling(c * np.logspace(-1, 2, 40)) == "per_output"     # spreads 1:1000
    assert target_scaling(c * np.linspace(1, 5, 40)) == "global"           # within 10x
    assert target_scaling(None) == "global"
    # resolve_config: per output for unknown problems in the default preset only
    bad = split_data(c * np.logspace(-1, 2, 40))
    cfg = merge_config({})
    assert resolve_config(cfg, "unknown", 0, data=bad)["normalization"][
        "scale_targets"] == "per_output"
    for problem, preset in (("dcr", "default"), ("cdr", "default"), ("unknown", "paper")):
        assert resolve_config(cfg, problem, 0, preset=preset, data=bad)["normalization"][
            "scale_targets"] == "global"
    user = merge_config({"normalization": {"scale_targets": "per_output"}})
    assert resolve_config(user, "dcr", 0)["normalization"]["scale_targets"] == "per_output"


def test_selection_score_rule() -> None:
    c = rank_r_targets()
    assert selection_score(c, c[:50]) == "relative"
    c0 = c.copy()
    c0[3] = 1e-6                                       # one sample of near-zero targets
    assert selection_score(c0, c[:50]) == "scale_free"
    assert selection_score(c, c0) == "scale_free"


def _npz(path: Path, c: np.ndarray, y: np.ndarray) -> Path:
    split = np.array(["train"] * 150 + ["validation"] * 50 + ["test"] * 50)
    np.savez(path, y=y, c=c, split=split)
    return path


def _train(tmp_path: Path, data: Path, name: str, toml: str, *extra: str) -> dict:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(toml)
    out = tmp_path / name
    assert train_main(["--data", str(data), "--method", "gnvpro", "--quiet", "--threads", "1",
                       "--config", str(cfg), "--out", str(out), *extra]) == 0
    return json.loads((out / "summary.json").read_text())


SMALL = "[model]\nwidth = 4\nlevels = [2, 4]\n[gnvpro]\nwork_units_per_level = [40, 30]\n"


def test_per_output_scaling_equals_an_unscaled_fit_on_well_scaled_data(tmp_path) -> None:
    """All outputs with the same spread: per-output scaling is a scalar multiple of the global
    one, GNvpro's steps are invariant to it, so the surrogates agree in physical units."""
    rng = np.random.default_rng(1)
    y = rng.uniform(size=(250, 3))
    c = np.tanh(y @ rng.normal(size=(3, 6)) * 2) + 0.3 * np.sin(3 * y[:, :1])
    tr = c[:150]                                                  # the training split
    c = (c - tr.mean(axis=0)) / tr.std(axis=0) * 2.0 + 5.0        # same std 2, mean 5
    data = _npz(tmp_path / "well.npz", c, y)
    per = _train(tmp_path, data, "per", SMALL + "[normalization]\nscale_targets = "
                 "\"per_output\"\n")
    glob = _train(tmp_path, data, "glob", SMALL + "[normalization]\nscale_targets = "
                  "\"global\"\n")
    m_per, m_glob = surrogate.load(tmp_path / "per"), surrogate.load(tmp_path / "glob")
    assert m_per.torch_model.normalizer.c_scale.shape == (6,)
    assert m_glob.torch_model.normalizer.c_scale.shape == ()
    # the scales differ (std 2 vs rms ~5.4): the normalised problems are not the same ...
    assert not np.isclose(float(m_glob.torch_model.normalizer.c_scale), 2.0, rtol=0.1)
    y_test = y[200:]
    # ... yet the surrogates agree in physical units
    np.testing.assert_allclose(m_per.predict(y_test), m_glob.predict(y_test), rtol=1e-7,
                               atol=1e-7 * np.abs(c).max())
    assert per["errors"]["test"]["mean"] == pytest.approx(glob["errors"]["test"]["mean"],
                                                          rel=1e-6)


def test_summary_has_scale_free_figures_and_the_note(tmp_path) -> None:
    rng = np.random.default_rng(2)
    y = rng.uniform(-1, 1, size=(250, 3))
    y[[0, 160], 0] = [1e-4, -2e-4]            # near-zero targets in training and validation
    c = np.column_stack([y[:, 0] * 800.0, y[:, 0] * np.cos(y[:, 1]) * 0.5,
                         y[:, 0] * y[:, 2] * 30.0])            # all vanish at y0 = 0
    data = _npz(tmp_path / "foreign.npz", c, y)
    s = _train(tmp_path, data, "foreign", SMALL)
    assert "scale-free" in s["selection"] or "standardised" in s["selection"]
    assert any("ill-conditioned" in n for n in s["notes"])
    sf = s["scale_free"]["test"]
    assert 0 < sf["relative_frobenius"] < 1 and len(sf["r2"]) == 3
    model = surrogate.load(tmp_path / "foreign")
    assert model.torch_model.normalizer.c_scale.shape == (3,)     # per output: 800 vs 0.5
    # the summary's figure is the metric's on the saved model
    from surrogate.metrics import output_statistics, relative_frobenius
    train, test = slice(0, 150), slice(200, 250)
    expected = relative_frobenius(model.predict(y[test]), c[test],
                                  *output_statistics(c[train]))
    assert sf["relative_frobenius"] == pytest.approx(expected, rel=1e-10)
    text = (tmp_path / "foreign" / "summary.txt").read_text()
    assert "ill-conditioned" in text and "rel. Frobenius" in text


def test_time_budget_stops_on_time(tmp_path) -> None:
    """The run ends within 10 % of the budget plus one iteration (the longest one)."""
    rng = np.random.default_rng(3)
    y = rng.uniform(size=(250, 3))
    c = np.tanh(y @ rng.normal(size=(3, 5)) * 2)
    data = _npz(tmp_path / "tb.npz", c, y)
    seconds = 4.0
    s = _train(tmp_path, data, "tb", "[gnvpro]\nmax_iter = 300\n", "--time-budget",
               str(seconds))
    hist = np.genfromtxt(tmp_path / "tb" / "history.csv", delimiter=",", names=True,
                         dtype=None, encoding="utf-8")
    t = hist["wall_time"]
    one_iteration = float(np.diff(t).max())
    assert s["wall_time"] <= 1.1 * seconds + one_iteration
    assert s["wall_time"] >= 0.5 * seconds                  # and it used the time
    assert s["stop_reasons"] == ["time budget"] * 3
    assert s["time_budget"]["seconds"] == seconds
    assert s["time_budget"]["width"] == surrogate.load(tmp_path / "tb").torch_model.features.width


def test_time_budget_of_an_ensemble_is_shared(tmp_path) -> None:
    """``--ensemble K --time-budget T``: each member plans for T / K and the whole run ends
    within 10 % of T plus one iteration per member."""
    rng = np.random.default_rng(4)
    y = rng.uniform(size=(250, 3))
    data = _npz(tmp_path / "tbe.npz", np.tanh(y @ rng.normal(size=(3, 5)) * 2), y)
    seconds = 4.0
    s = _train(tmp_path, data, "tbe", "[gnvpro]\nmax_iter = 300\n", "--time-budget",
               str(seconds), "--ensemble", "2")
    walls = []
    for k in range(2):
        member = json.loads((tmp_path / "tbe" / "members" / str(k) / "summary.json").read_text())
        assert member["time_budget"]["seconds"] == seconds / 2
        hist = np.genfromtxt(tmp_path / "tbe" / "members" / str(k) / "history.csv",
                             delimiter=",", names=True, dtype=None, encoding="utf-8")
        walls.append(member["wall_time"] - float(np.diff(hist["wall_time"]).max()))
    assert sum(walls) <= 1.1 * seconds and s["ensemble_size"] == 2


def test_time_plan_picks_the_widest_affordable_width(monkeypatch) -> None:
    """With seconds per work unit proportional to the width, the plan takes the widest
    candidate that can spend WU_PER_WIDTH work units per unit of width."""
    data = split_data(rank_r_targets(n=300, m=100, r=50))
    rate = 1e-3                               # seconds per work unit per unit of width
    monkeypatch.setattr(budget, "probe_rate", lambda cfg, d, w, n, s, dev: rate * w)
    cfg = resolve_config(merge_config({}), "unknown", 0)
    widths = budget.candidate_widths(cfg, data, torch.device("cpu"))
    # from the run's own width (8 without data) to the data width of 300 x 50 independent
    # target values (the rank, not the 100 outputs): 40
    assert widths == [8, 12, 16, 24, 32, 40]
    assert budget.candidate_widths(cfg, split_data(rank_r_targets(n=300, m=100, r=5)),
                                   torch.device("cpu")) == [8, 12]  # rank 5: 1500 values
    assert budget.candidate_widths(dict(cfg, model=dict(cfg["model"], width=20)), data,
                                   torch.device("cpu")) == [20, 24, 32, 40]  # never narrower
    # the plan's own clock: the candidates computed once (an SVD of the targets, slow on a
    # loaded machine, would count against the 10 % probe share of 5 s)
    monkeypatch.setattr(budget, "candidate_widths", lambda cfg, d, dev: widths)
    for seconds, expected in ((5.0, 12), (30.0, 24), (100.0, 40)):
        plan = budget.plan_time_budget(cfg, data, seconds, seed=0, device=torch.device("cpu"))
        left = seconds * (1 - budget.RESERVE)          # the probes take no time here (almost)

        fits = [w for w in widths if left / (rate * w) >= budget.WU_PER_WIDTH * w]
        assert plan.width == max(fits) == expected
        assert math.isclose(sum(plan.level_seconds), left - plan.probe_seconds, rel_tol=1e-6)
        assert plan.level_seconds == pytest.approx(
            [share * sum(plan.level_seconds) for share in budget.LEVEL_SHARES])


def test_the_default_network_per_problem() -> None:
    """``[model] architecture = "auto"``: the default preset's network of the problem (DCR: a
    ResNet of width 64, one level of 8 layers, 4000 work units), the paper's Neural ODE under
    ``--preset paper``; an explicit choice wins, and the budget's total stays."""
    def model(problem: str, user: dict | None = None, preset: str = "default") -> tuple:
        cfg = resolve_config(merge_config(user or {}), problem, 0, preset=preset)
        m = cfg["model"]
        return m["architecture"], m["width"], m["levels"], cfg["gnvpro"]["work_units_per_level"]

    assert model("dcr") == ("resnet", 64, [8], [4000.0])
    assert model("dcr", preset="paper") == ("neural_ode", 16, [2, 4, 8], 400.0)
    arch, width, levels, wu = model("dcr", {"model": {"architecture": "neural_ode"}})
    assert (arch, width, levels) == ("neural_ode", 64, [2, 4, 8])
    assert (sum(wu) if isinstance(wu, list) else 3 * wu) == pytest.approx(4000.0)
    assert model("cdr") == ("neural_ode", 10, [2, 4, 8], [800.0, 600.0, 400.0])
    assert model("cdr", {"model": {"architecture": "resnet"}})[:3] == ("resnet", 16, [8])
