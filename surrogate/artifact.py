"""Saving and loading trained surrogates.

Layout of a model directory::

    weights.npz     all weights and normalisation statistics (numpy arrays only; read with
                    ``allow_pickle=False``, so loading never executes code)
    metadata.json   format name and version, SHA-256 of weights.npz, architecture,
                    normalisation settings, training provenance

Loading checks the format version and the SHA-256 of the weights file and refuses a
tampered, corrupt or foreign file with :class:`SurrogateFormatError`.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from solvers.common.atomic import sha256_file, write_bytes_atomic
from surrogate.errors import NonFiniteModelError, SurrogateFormatError
from surrogate.metadata import (
    METADATA_FILE,
    WEIGHTS_FILE,
    is_ensemble,
    new_metadata,
    read_metadata,
    weights_path,
    write_metadata,
)
from surrogate.separable import SeparableModel

__all__ = ["NonFiniteModelError", "SurrogateFormatError", "load_model", "load_weights",
           "nonfinite_weights", "save_surrogate", "state_to_npz_bytes"]


def state_to_npz_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """Serialise a state dict of tensors to ``.npz`` bytes (plain arrays)."""
    buf = io.BytesIO()
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items()}
    # numpy's stub types **kwds as if a key could be "allow_pickle" (bool)
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def load_npz_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict written by :func:`state_to_npz_bytes` (no pickle).

    Raises
    ------
    SurrogateFormatError
        For a file that is not a zip archive of numeric ``.npy`` arrays (message starts
        with the path).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise SurrogateFormatError(f"{path}: a single .npy array, not an .npz archive")
            arrays = {k: np.array(npz[k]) for k in npz.files}
    except SurrogateFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError,
            NotImplementedError) as exc:
        raise SurrogateFormatError(f"{path}: not a readable .npz archive of arrays "
                                   f"({type(exc).__name__}: {exc})") from None
    bad = [k for k, a in arrays.items() if a.dtype.kind not in "fiub"]
    if bad:
        raise SurrogateFormatError(f"{path}: arrays {bad} are not numeric "
                                   f"({arrays[bad[0]].dtype})")
    return {k: torch.from_numpy(a) for k, a in arrays.items()}


def nonfinite_weights(model: SeparableModel) -> list[str]:
    """Descriptions (``name = value``) of the parameters and normalisation statistics of
    ``model`` that are NaN or inf (scales: also zero or negative); empty when all are finite."""
    bad = [f"{name} = {p.detach().reshape(-1)[~torch.isfinite(p.detach().reshape(-1))][0].item()}"
           for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    return bad + [f"normalizer.{b}" for b in model.normalizer.nonfinite()]


def _check_state(path: Path, model: SeparableModel, state: dict[str, torch.Tensor]) -> None:
    """Missing, extra or misshapen arrays of ``state`` against ``model``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = ([f"missing arrays {missing}"] if missing else []) + (
        [f"unexpected arrays {extra}"] if extra else []) + (
        [f"wrong shapes: {', '.join(shapes)}"] if shapes else [])
    if problems:
        raise SurrogateFormatError(f"{path}: weights do not match the architecture in the "
                                   "metadata: " + "; ".join(problems))


def load_weights(path: str | os.PathLike, config: dict, device: str | torch.device = "cpu",
                 config_source: str = METADATA_FILE) -> SeparableModel:
    """Model of architecture ``config`` with the weights of ``path`` (an .npz file).

    Raises
    ------
    SurrogateFormatError
        Unreadable archive, an architecture that cannot be built, missing/extra/misshapen
        arrays, or non-finite weights; the message names the file and the problem.
    """
    path = Path(path)
    state = load_npz_state(path)
    try:
        model = SeparableModel.from_config(config, device=device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise SurrogateFormatError(
            f"{config_source}: the model architecture cannot be built ({type(exc).__name__}: "
            f"{exc})") from None
    _check_state(path, model, state)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        raise SurrogateFormatError(f"{path}: weights do not fit the architecture ({exc})"
                                   ) from None
    bad = nonfinite_weights(model)
    if bad:
        raise SurrogateFormatError(f"{path}: the model is unusable, non-finite weights: "
                                   f"{'; '.join(bad[:5])}; retrain it")
    return model


def save_surrogate(model: SeparableModel, directory: str | os.PathLike,
                   metadata: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``weights.npz`` and ``metadata.json`` into ``directory``.

    Parameters
    ----------
    model : SeparableModel
    directory : path
        Created if missing.
    metadata : dict, optional
        Extra JSON-serialisable information (training provenance, method, ...); stored under
        the key ``"training"``.
    extra : dict, optional
        JSON-serialisable top-level entries, e.g. ``"inputs"`` and ``"outputs"`` (the training
        parameter box, names and observable coordinates; see ``surrogate.uq_model``).

    Returns
    -------
    Path of the metadata file.
    """
    bad = nonfinite_weights(model)
    if bad:
        raise NonFiniteModelError(f"refusing to save a model with non-finite weights: "
                                  f"{'; '.join(bad[:5])}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = state_to_npz_bytes(model.state_dict())
    write_bytes_atomic(directory / WEIGHTS_FILE, data)
    extra = dict(extra or {})
    meta = new_metadata(model.config(), hashlib.sha256(data).hexdigest(), metadata,
                        inputs=extra.pop("inputs", None), outputs=extra.pop("outputs", None))
    for key, value in extra.items():
        meta.setdefault(key, value)
    return write_metadata(directory, meta)


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[SeparableModel, dict]:
    """Rebuild the model of a directory written by :func:`save_surrogate`.

    Raises
    ------
    SurrogateFormatError
        Missing files, wrong format version, SHA-256 mismatch, or weights that do not fit
        the architecture.
    """
    directory = Path(directory)
    meta = read_metadata(directory)
    if is_ensemble(meta):
        raise SurrogateFormatError(f"{directory} holds an ensemble (members in "
                                   f"{directory / 'members'}): load it with surrogate.load")
    wpath = weights_path(directory, meta)
    if not wpath.is_file():
        raise SurrogateFormatError(f"{wpath}: weights file missing")
    digest = sha256_file(wpath)
    if digest != meta.get("weights_sha256"):
        raise SurrogateFormatError(
            f"{wpath}: SHA-256 {digest} does not match metadata.json "
            f"({meta.get('weights_sha256')}); the weights file was modified or is corrupt")
    model = load_weights(wpath, meta["model"], device=device,
                         config_source=str(directory / METADATA_FILE))
    return model.to(device), meta
