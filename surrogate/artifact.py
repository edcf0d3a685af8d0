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
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from surrogate.separable import SeparableModel

FORMAT_NAME = "varpro-surrogates/separable"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.npz"
METADATA_FILE = "metadata.json"


class SurrogateFormatError(ValueError):
    """A model directory that cannot be loaded (missing, tampered, wrong version)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)           # mkstemp creates 0600; use the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_to_npz_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """Serialise a state dict of tensors to ``.npz`` bytes (plain arrays)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: v.detach().cpu().numpy() for k, v in state.items()})
    return buf.getvalue()


def load_npz_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict written by :func:`state_to_npz_bytes` (no pickle)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}


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
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = state_to_npz_bytes(model.state_dict())
    atomic_write_bytes(directory / WEIGHTS_FILE, data)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "model": model.config(),
        "training": metadata or {},
        "torch_version": torch.__version__,
    }
    for key, value in (extra or {}).items():
        meta.setdefault(key, value)
    atomic_write_text(directory / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    return directory / METADATA_FILE


def read_metadata(directory: str | os.PathLike) -> dict:
    """Metadata of a model directory after checking format name and version."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise SurrogateFormatError(f"{path}: no such file (not a surrogate model directory)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SurrogateFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise SurrogateFormatError(f"{path}: not a {FORMAT_NAME} metadata file")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise SurrogateFormatError(
            f"{path}: unsupported format version {version!r} (this package reads version "
            f"{FORMAT_VERSION})")
    return meta


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
    wpath = directory / str(meta.get("weights_file", WEIGHTS_FILE))
    if not wpath.is_file():
        raise SurrogateFormatError(f"{wpath}: weights file missing")
    digest = sha256_file(wpath)
    if digest != meta.get("weights_sha256"):
        raise SurrogateFormatError(
            f"{wpath}: SHA-256 {digest} does not match metadata.json "
            f"({meta.get('weights_sha256')}); the weights file was modified or is corrupt")
    try:
        model = SeparableModel.from_config(meta["model"], device=device)
        model.load_state_dict(load_npz_state(wpath), strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise SurrogateFormatError(f"{directory}: weights do not match the metadata ({exc})"
                                   ) from exc
    return model.to(device), meta
