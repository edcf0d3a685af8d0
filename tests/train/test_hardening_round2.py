"""Issue 20 (training): slimTrain's settings and memory, the config template, train-surrogate
--out '', and a full disk in the middle of a slimTrain run."""

from __future__ import annotations

import errno
import json
import textwrap
import tomllib
from pathlib import Path

import pytest

import train.checkpoint as checkpoint
import train.cli as cli
import train.config as config
from train.config import ConfigError, merge_config


def train(data: Path, cfg: Path, out: Path, method: str = "slimtrain", *extra: str) -> int:
    return cli.main(["--data", str(data), "--method", method, "--config", str(cfg),
                     "--quiet", "--out", str(out), *extra])


def test_slimtrain_with_zero_epochs_is_refused(tmp_path, data, capsys):
    """It used to save an untrained model and exit 0."""
    cfg = tmp_path / "zero.toml"
    cfg.write_text("[slimtrain]\nepochs = 0\n")
    assert train(data, cfg, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "slimtrain.epochs must be >= 1 (0 would save an untrained model), got 0" in err
    assert not (tmp_path / "o").exists()


def test_slimtrain_width_is_in_the_memory_estimate(tmp_path, data, capsys):
    """width = 100000 used to reach a 640 GB torch allocation (a traceback): slimTrain trains
    its own network, which the estimate now sizes."""
    cfg = tmp_path / "wide.toml"
    cfg.write_text("[slimtrain]\nwidth = 100000\n")
    assert train(data, cfg, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "slimtrain with slimtrain.width = 100000, slimtrain.depth = 8" in err
    assert "reduce slimtrain.width" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_the_config_template_is_accepted_as_shown(data):
    """The template in train.config's docstring (with its "auto" values) is valid input and
    means the defaults; "auto" for a key without an automatic default is still refused."""
    doc = config.__doc__ or ""
    template = textwrap.dedent(doc[doc.index("    [model]"):])
    user = tomllib.loads(template)
    assert user["model"]["width"] == "auto"
    assert merge_config(user) == merge_config({})
    with pytest.raises(ConfigError, match="model.gamma: 'auto' is not a value of this key"):
        merge_config({"model": {"gamma": "auto"}})


def test_out_must_not_be_empty(tmp_path, data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    assert cli.main(["--data", str(data), "--method", "gnvpro", "--out", ""]) == 2
    assert "argument --out: must be a path, got ''" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "small.npz"]


def test_disk_full_in_a_slimtrain_epoch_leaves_only_the_previous_checkpoint(
        tmp_path, data, monkeypatch, capsys):
    """The message says the temporary files were removed: the weight files of the failed
    checkpoint are removed too, and the last good checkpoint resumes."""
    cfg = tmp_path / "slim.toml"
    cfg.write_text("[slimtrain]\nwidth = 3\ndepth = 2\nepochs = 4\nbatch_size = 20\n")
    real = checkpoint.write_text_atomic
    calls: list[Path] = []

    def full_on_third(path, text):
        calls.append(Path(path))
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(checkpoint, "write_text_atomic", full_on_third)
    out = tmp_path / "m"
    assert train(data, cfg, out) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "temporary files were removed" in err
    d = out / "checkpoint"
    state = json.loads((d / "state.json").read_text())
    referenced = {name for name in state["files"].values() if name} | {"state.json"}
    assert {p.name for p in d.iterdir()} == referenced          # no orphan weight files
    monkeypatch.undo()
    assert train(data, cfg, out, "slimtrain", "--resume") == 0
    assert not d.exists()
