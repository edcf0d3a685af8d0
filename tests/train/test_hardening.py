"""Issue 11 (training half): bad settings, foreign folders, torn checkpoints, a full disk and
non-finite models give a clear error and leave the files as they were."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train.checkpoint as checkpoint
import train.cli as cli
import train.run as train_run
from datasets.split_data import SplitData
from surrogate import NeuralODE, Normalizer, SeparableModel, load
from surrogate.artifact import save_surrogate
from surrogate.errors import NonFiniteModelError
from surrogate.normalization import NormalizationError
from train.config import ConfigError, merge_config, read_toml, resolve_config
from train.outputs import OUTPUT_FILES
from train.resources import MemoryEstimateError, check_memory, parameter_count

FAST = """
[model]
width = 3
levels = [1, 2]
[gnvpro]
work_units_per_level = 8
r_max = 3
[lbfgsvpro]
work_units_per_level = 8
[gn]
work_units_per_level = 8
r_max = 3
[adam]
work_units_per_level = 2
batch_size = 20
"""


@pytest.fixture
def fast(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    return path


def train(data: Path, config: Path, out: Path, *extra: str, method: str = "lbfgsvpro") -> int:
    return cli.main(["--data", str(data), "--method", method, "--config", str(config),
                     "--quiet", "--out", str(out), *extra])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def predictions(folder: Path) -> np.ndarray:
    return load(folder).predict(np.random.default_rng(0).uniform(size=(5, 4)))


# --- TOML settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value, message", [
    ("model", "width", "0", "model.width = 0: must be >= 1"),
    ("model", "width", "-3", "model.width = -3: must be >= 1"),
    ("adam", "batch_size", "0", "adam.batch_size = 0: must be >= 1"),
    ("model", "final_time", "inf", "model.final_time = inf: must be a finite number"),
    ("model", "final_time", "0.0", "model.final_time = 0.0: must be > 0"),
    ("loss", "alpha1", "-1", "loss.alpha1 = -1.0: must be >= 0"),
    ("gnvpro", "krylov_tol", "nan", "gnvpro.krylov_tol = nan: must be a finite number"),
    ("gn", "krylov_tol", "2", "gn.krylov_tol = 2.0: must be >= 0 and <= 1"),
    ("gnvpro", "r_max", "0", "gnvpro.r_max = 0: must be >= 1"),
    ("gnvpro", "max_iter", "0", "gnvpro.max_iter = 0: must be >= 1"),
    ("gnvpro", "work_units_per_level", "0", "gnvpro.work_units_per_level = 0.0: must be > 0"),
    ("lbfgsvpro", "memory", "0", "lbfgsvpro.memory = 0: must be >= 1"),
    ("lbfgsvpro", "grad_rtol", "-1e-3", "lbfgsvpro.grad_rtol = -0.001: must be >= 0"),
    ("adam", "lr", "-1", "adam.lr = -1.0: must be > 0"),
    ("adam", "lr", "inf", "adam.lr = inf: must be a finite number"),
    ("model", "levels", "[8, 4]", "model.levels = [8, 4]: the numbers of time steps must "
                                  "increase"),
    ("model", "gamma", "-1e-4", "model.gamma = -0.0001: must be >= 0"),
    ("model", "init_scale", "nan", "model.init_scale = nan: must be a finite number"),
    ("split", "seed", "-1", "split.seed = -1: must be >= 0"),
])
def test_out_of_range_settings_are_refused_naming_the_key(tmp_path, data, capsys, section,
                                                          key, value, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match="bad.toml: " + message.replace("[", r"\[")
                       .replace("]", r"\]")):
        merge_config(read_toml(cfg), source=str(cfg))
    method = section if section in ("gnvpro", "gn", "lbfgsvpro", "adam") else "gnvpro"
    assert train(data, cfg, tmp_path / "o", method=method) == 2
    err = capsys.readouterr().err
    assert err.startswith("train-surrogate: error:") and message in err
    assert not (tmp_path / "o").exists()


def test_non_utf8_and_directory_configs_are_refused(tmp_path, data, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"[model]\n# caf\xe9\nwidth = 4\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        read_toml(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        read_toml(tmp_path)
    assert train(data, bad, tmp_path / "o") == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    assert train(data, tmp_path, tmp_path / "o") == 2
    assert "is a directory" in capsys.readouterr().err


def test_the_memory_estimate_refuses_a_huge_width(tmp_path, data, capsys):
    cfg = tmp_path / "wide.toml"
    cfg.write_text("[model]\nwidth = 100000\n")
    assert train(data, cfg, tmp_path / "o", method="gnvpro") == 2
    err = capsys.readouterr().err
    assert "model.width = 100000" in err and "GiB" in err and "reduce model.width" in err
    assert not (tmp_path / "o").exists()


def test_parameter_count_of_the_estimate_is_the_network_size():
    for arch, cls in (("neural_ode", NeuralODE),):
        net = cls(5, 7, 4)
        assert parameter_count(arch, 5, 7, 4) == sum(p.numel() for p in net.parameters())
    from surrogate import ResNet
    assert parameter_count("resnet", 5, 7, 4) == sum(p.numel() for p in
                                                      ResNet(5, 7, 4).parameters())
    cfg = resolve_config(merge_config({}), "cdr", 0)
    check_memory(cfg, "gnvpro", 400, 55, 72, torch.device("cpu"), available=1e9)
    with pytest.raises(MemoryEstimateError, match=r"more than the 0.000977 GiB free on cpu"):
        check_memory(cfg, "gnvpro", 400, 55, 72, torch.device("cpu"), available=2**20)


# --- data -----------------------------------------------------------------------------------

@pytest.mark.parametrize("y_shape, c_shape, message", [
    ((80, 0), (80, 6), "'y' is empty (shape (80, 0))"),     # refused by the dataset reader
    ((80, 4), (80, 0), "'c' is empty (shape (80, 0))"),
    ((0, 4), (0, 6), "'y' is empty (shape (0, 4))"),
])
def test_data_without_features_or_samples_is_refused(tmp_path, fast, capsys, y_shape, c_shape,
                                                     message):
    path = tmp_path / "d.npz"
    np.savez(path, y=np.ones(y_shape), c=np.ones(c_shape))
    assert train(path, fast, tmp_path / "o") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- non-finite values ----------------------------------------------------------------------

def test_huge_targets_train_like_unscaled_ones_or_are_refused(tmp_path, data, fast, capsys):
    """Targets scaled by 1e90 train to the same relative errors (scale-free normalisation);
    1e300 is refused by the dataset reader (implausible magnitude) before anything trains.
    The overflow-free normaliser at 1e300 is tested directly below."""
    raw = np.load(data)
    big = tmp_path / "big.npz"
    np.savez(big, y=raw["y"], c=raw["c"] * 1e90)
    assert train(data, fast, tmp_path / "ref", method="gnvpro") == 0
    assert train(big, fast, tmp_path / "big", method="gnvpro") == 0
    s = load(tmp_path / "big")
    assert np.isfinite(float(s.torch_model.normalizer.c_scale))
    ref = json.loads((tmp_path / "ref" / "summary.json").read_text())["errors"]
    got = json.loads((tmp_path / "big" / "summary.json").read_text())["errors"]
    for split in ("train", "validation", "test"):
        assert got[split]["mean"] == pytest.approx(ref[split]["mean"], rel=1e-6)
    y = raw["y"][:5]
    np.testing.assert_allclose(s.predict(y), 1e90 * load(tmp_path / "ref").predict(y),
                               rtol=1e-6)
    capsys.readouterr()
    np.savez(big, y=raw["y"], c=raw["c"] * 1e300)
    assert train(big, fast, tmp_path / "huge", method="gnvpro") == 2
    assert "magnitude" in capsys.readouterr().err
    assert not (tmp_path / "huge").exists()


def test_normaliser_statistics_do_not_overflow_and_non_finite_data_is_refused():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(30, 3, generator=g, dtype=torch.float64)
    c = 5 + torch.rand(30, 4, generator=g, dtype=torch.float64)
    ref = Normalizer(3, 4, center_targets=True).fit(y, c)
    np.testing.assert_allclose(ref.y_scale, y.numpy().std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ref.c_shift, c.numpy().mean(axis=0), rtol=1e-12)
    big = Normalizer(3, 4, center_targets=True).fit(1e300 * y, 1e300 * c)
    assert float(big.c_scale) == pytest.approx(1e300 * float(ref.c_scale), rel=1e-12)
    np.testing.assert_allclose(big.y_scale / 1e300, ref.y_scale, rtol=1e-12)
    c_bad = c.clone()
    c_bad[3, 1] = float("inf")
    with pytest.raises(NormalizationError, match="targets c contain NaN or inf"):
        Normalizer(3, 4).fit(y, c_bad)


def test_a_diverging_run_stops_with_a_message_and_saves_nothing(tmp_path, data, fast, capsys):
    cfg = tmp_path / "lr.toml"
    cfg.write_text(FAST.replace("batch_size = 20", "batch_size = 20\nlr = 1e300"))
    assert train(data, cfg, tmp_path / "o", method="adam") == 1
    err = capsys.readouterr().err
    assert "adam: the training loss is" in err and "at level 1/1 (d=2), iteration 1" in err
    assert "training diverged" in err and "adam.lr" in err
    assert not (tmp_path / "o").exists()


def test_an_overflowing_network_stops_with_a_message(tmp_path, data, capsys):
    cfg = tmp_path / "t.toml"
    cfg.write_text(FAST.replace("levels = [1, 2]", "levels = [1, 2]\nfinal_time = 1e300"))
    assert train(data, cfg, tmp_path / "o", method="gnvpro") == 1
    err = capsys.readouterr().err
    assert "not finite" in err and "model.final_time" in err
    assert not (tmp_path / "o").exists()


def test_a_non_finite_model_is_never_saved(tmp_path):
    g = torch.Generator().manual_seed(0)
    model = SeparableModel(NeuralODE(2, 3, 1, generator=g), 2)
    with torch.no_grad():
        model.W[1, 2] = float("nan")
    with pytest.raises(NonFiniteModelError, match=r"W = nan"):
        save_surrogate(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    with torch.no_grad():
        model.W.fill_(1.0)
        model.normalizer.c_scale.fill_(1e308)
        model.W[:, -1] = 1e10                 # finite weights, predictions overflow
    split = SplitData({s: np.zeros((2, 2)) for s in ("train", "validation", "test")},
                          {s: np.zeros((2, 2)) for s in ("train", "validation", "test")},
                          "unknown", "seeded")
    with pytest.raises(NonFiniteModelError, match="predictions on the training split are not "
                                                  "finite.*c_scale = 1e\\+308"):
        train_run.check_finite_predictions(model, split)


# --- the output folder ----------------------------------------------------------------------

def test_a_different_model_in_out_is_not_overwritten(tmp_path, data, fast, capsys):
    out = tmp_path / "m"
    assert train(data, fast, out, method="gnvpro") == 0
    before = snapshot(out)
    assert train(data, fast, out) == 2
    err = capsys.readouterr().err
    assert "already holds a gnvpro model trained on" in err and "--overwrite" in err
    assert snapshot(out) == before
    # the same run again replaces its own model (no option needed): same result on CPU
    assert train(data, fast, out, method="gnvpro") == 0
    assert snapshot(out)["weights.npz"] == before["weights.npz"]
    # --resume of a finished run has nothing to do and leaves the files alone
    assert train(data, fast, out, "--resume", method="gnvpro") == 0
    assert "nothing to resume" in capsys.readouterr().err
    assert train(data, fast, out, "--overwrite") == 0
    assert load(out).metadata["training"]["method"] == "lbfgsvpro"
    assert not list(out.glob(".*")), "temporary files left behind"


def test_compare_checks_every_method_folder_before_training(tmp_path, data, fast, capsys):
    out = tmp_path / "cmp"
    assert train(data, fast, out / "adam", method="lbfgsvpro") == 0   # a foreign model
    before = snapshot(out)
    rc = cli.main(["--data", str(data), "--compare", "--config", str(fast), "--quiet",
                   "--out", str(out)])
    assert rc == 2
    assert "cmp/adam already holds a lbfgsvpro model" in capsys.readouterr().err
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["adam"]


def test_out_that_is_a_file_is_refused(tmp_path, data, fast, capsys):
    f = tmp_path / "file"
    f.write_text("keep")
    assert train(data, fast, f) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert f.read_text() == "keep"


# --- checkpoints ----------------------------------------------------------------------------

def interrupt_after_first_level(monkeypatch, data, config, out) -> None:
    real = train_run.save_checkpoint

    def save_then_stop(*a, **kw):
        real(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_run, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(data, config, out)
    monkeypatch.setattr(train_run, "save_checkpoint", real)


def test_a_kill_while_writing_a_checkpoint_leaves_a_resumable_one(tmp_path, data, fast,
                                                                  monkeypatch):
    assert train(data, fast, tmp_path / "ref") == 0
    real = checkpoint.write_text_atomic
    calls = []

    def killed_before_second_state(path, text):
        calls.append(path)
        if len(calls) == 2:                # the state.json of level 2, weights already written
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(checkpoint, "write_text_atomic", killed_before_second_state)
    with pytest.raises(KeyboardInterrupt):
        train(data, fast, tmp_path / "run")
    monkeypatch.setattr(checkpoint, "write_text_atomic", real)
    assert train(data, fast, tmp_path / "run", "--resume") == 0
    assert np.array_equal(predictions(tmp_path / "run"), predictions(tmp_path / "ref"))


def test_a_torn_checkpoint_says_how_to_recover_and_restart_recovers(tmp_path, data, fast,
                                                                    monkeypatch, capsys):
    assert train(data, fast, tmp_path / "ref") == 0
    out = tmp_path / "run"
    interrupt_after_first_level(monkeypatch, data, fast, out)
    (weights,) = (out / "checkpoint").glob("model*.npz")
    other = np.load(weights)
    buf = io.BytesIO()
    np.savez(buf, **{k: other[k] * 0.5 for k in other.files})   # model and state out of step
    weights.write_bytes(buf.getvalue())
    assert train(data, fast, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "does not match state.json" in err and "--restart" in err
    assert train(data, fast, out) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--restart" in err
    assert train(data, fast, out, "--resume", "--restart") == 2
    assert train(data, fast, out, "--restart") == 0
    assert not (out / "checkpoint").exists()
    assert np.array_equal(predictions(out), predictions(tmp_path / "ref"))


@pytest.mark.parametrize("damage, message", [
    ("drop_key", "corrupt checkpoint (missing key 'history')"),
    ("not_json", "corrupt checkpoint"),
    ("bad_zip", "not a readable .npz archive"),
])
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, data, fast, monkeypatch, capsys,
                                               damage, message):
    out = tmp_path / "run"
    interrupt_after_first_level(monkeypatch, data, fast, out)
    state_path = out / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    if damage == "drop_key":
        del state["history"]
        state_path.write_text(json.dumps(state))
    elif damage == "not_json":
        state_path.write_bytes(b"\x00\xff{")
    else:
        name = state["files"]["model"]
        (out / "checkpoint" / name).write_bytes(b"PK\x03\x04 not a zip")
        state["sha256"][name] = hashlib.sha256(b"PK\x03\x04 not a zip").hexdigest()
        state_path.write_text(json.dumps(state))
    assert train(data, fast, out, "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith("train-surrogate: error:") and message in err and "--restart" in err
    assert "Traceback" not in err


# --- a full disk ----------------------------------------------------------------------------

def fail_fsync_below(monkeypatch, marker: str) -> None:
    """os.fsync raises ENOSPC (as on a full disk) for files whose path contains ``marker``."""
    real = os.fsync

    def fsync(fd):
        if marker in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_while_saving_leaves_the_previous_model_intact(tmp_path, data, fast,
                                                                 monkeypatch, capsys):
    out = tmp_path / "m"
    assert train(data, fast, out) == 0
    before = snapshot(out)
    fail_fsync_below(monkeypatch, "/.staging-")
    assert train(data, fast, out) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free some space" in err
    assert "Traceback" not in err
    after = snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("checkpoint/")} == before
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUT_FILES, "checkpoint"])
    # the finished levels are in the checkpoint: once there is space, --resume only saves
    monkeypatch.undo()
    assert train(data, fast, out) == 2          # the checkpoint must be resumed or discarded
    assert train(data, fast, out, "--resume") == 0
    assert snapshot(out)["weights.npz"] == before["weights.npz"]
    assert not (out / "checkpoint").exists()


def test_disk_full_at_the_first_checkpoint_leaves_no_empty_folder(tmp_path, data, fast,
                                                                  monkeypatch, capsys):
    fail_fsync_below(monkeypatch, "/checkpoint/")
    assert train(data, fast, tmp_path / "new" / "m") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_real_write_failure_is_reported_and_leaves_no_temporary_files(tmp_path, data, fast):
    """The operating system refuses to write past a file-size limit (RLIMIT_FSIZE, EFBIG, the
    same path as a full disk): exit status 1, one message, the previous model intact."""
    out = tmp_path / "m"
    assert train(data, fast, out) == 0
    before = snapshot(out)
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "from train.cli import main\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))\n"
        f"sys.exit(main(['--data', {str(data)!r}, '--method', 'lbfgsvpro', '--config', "
        f"{str(fast)!r}, '--quiet', '--overwrite', '--seed', '1', '--out', {str(out)!r}]))\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("train-surrogate: error: cannot write ")
    assert "File too large" in proc.stderr and "Traceback" not in proc.stderr
    after = snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("checkpoint/")} == before
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temporary files left"


def test_a_version_1_checkpoint_is_still_resumed(tmp_path, data, fast, monkeypatch):
    assert train(data, fast, tmp_path / "ref") == 0
    out = tmp_path / "run"
    interrupt_after_first_level(monkeypatch, data, fast, out)
    d = out / "checkpoint"
    state = json.loads((d / "state.json").read_text())
    for role in ("model", "best"):               # the layout written before version 2
        name = state["files"][role]
        (d / name).rename(d / f"{role}.npz")
        state["sha256"][f"{role}.npz"] = state["sha256"].pop(name)
    del state["files"]
    state["version"] = 1
    (d / "state.json").write_text(json.dumps(state))
    assert train(data, fast, out, "--resume") == 0
    assert np.array_equal(predictions(out), predictions(tmp_path / "ref"))
