"""Damaged model folders give a SurrogateFormatError naming the file and the problem, never a
raw traceback (issue 11)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from surrogate import NeuralODE, Normalizer, SeparableModel, SurrogateFormatError, load
from surrogate.artifact import save_surrogate


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    norm = Normalizer(3, 5, center_targets=True).fit(
        torch.rand(20, 3, dtype=torch.float64), 50 + torch.rand(20, 5, dtype=torch.float64))
    model = SeparableModel(NeuralODE(3, 4, 2, generator=g), 5, norm)
    with torch.no_grad():
        model.W.normal_(generator=g)
    save_surrogate(model, tmp_path / "m", {"method": "test"})
    return tmp_path / "m"


def edit_metadata(d: Path, change) -> None:
    meta = json.loads((d / "metadata.json").read_text())
    change(meta)
    (d / "metadata.json").write_text(json.dumps(meta))


def replace_weights(d: Path, data: bytes) -> None:
    """New weights.npz whose SHA-256 is recorded in metadata.json (so the hash check passes)."""
    (d / "weights.npz").write_bytes(data)
    edit_metadata(d, lambda m: m.update(weights_sha256=hashlib.sha256(data).hexdigest()))


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def arrays(d: Path) -> dict:
    with np.load(d / "weights.npz") as z:
        return {k: z[k] for k in z.files}


def test_a_broken_zip_with_a_matching_hash(saved):
    replace_weights(saved, b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(SurrogateFormatError, match=r"weights.npz: not a readable .npz archive "
                                                   r"of arrays \(BadZipFile"):
        load(saved)


def test_a_truncated_archive_with_a_matching_hash(saved):
    replace_weights(saved, (saved / "weights.npz").read_bytes()[:-200])
    with pytest.raises(SurrogateFormatError, match="weights.npz: not a readable .npz archive"):
        load(saved)


def test_a_missing_array_is_named(saved):
    a = arrays(saved)
    del a["W"]
    replace_weights(saved, npz_bytes(a))
    with pytest.raises(SurrogateFormatError, match=r"missing arrays \['W'\]"):
        load(saved)


def test_an_extra_array_is_named(saved):
    replace_weights(saved, npz_bytes({**arrays(saved), "spare": np.zeros(3)}))
    with pytest.raises(SurrogateFormatError, match=r"unexpected arrays \['spare'\]"):
        load(saved)


def test_a_misshapen_array_is_named(saved):
    a = arrays(saved)
    a["W"] = a["W"][:, :-1]
    replace_weights(saved, npz_bytes(a))
    with pytest.raises(SurrogateFormatError, match=r"wrong shapes: W \(5, 4\) \(expected "
                                                   r"\(5, 5\)\)"):
        load(saved)


def test_non_finite_weights_are_refused(saved):
    a = arrays(saved)
    a["normalizer.c_scale"] = np.array(np.inf)
    replace_weights(saved, npz_bytes(a))
    with pytest.raises(SurrogateFormatError, match=r"non-finite weights: normalizer.c_scale "
                                                   r"\(target scale\) = inf"):
        load(saved)


def test_non_numeric_arrays_are_refused(saved):
    replace_weights(saved, npz_bytes({**arrays(saved), "W": np.array(["a", "b"])}))
    with pytest.raises(SurrogateFormatError, match=r"arrays \['W'\] are not numeric"):
        load(saved)


@pytest.mark.parametrize("path, message", [
    (("model", "normalizer"), "missing key 'model.normalizer'"),
    (("model", "features"), "missing key 'model.features'"),
    (("weights_sha256",), "missing key 'weights_sha256'"),
    (("model",), "missing key 'model'"),
])
def test_metadata_missing_a_key(saved, path, message):
    def drop(meta):
        node = meta
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]

    edit_metadata(saved, drop)
    with pytest.raises(SurrogateFormatError, match="metadata.json: " + message):
        load(saved)


def test_metadata_with_a_wrong_type(saved):
    edit_metadata(saved, lambda m: m["model"].update(n_out="five"))
    with pytest.raises(SurrogateFormatError, match="key 'model.n_out' must be a JSON integer"):
        load(saved)


def test_metadata_whose_architecture_cannot_be_built(saved):
    edit_metadata(saved, lambda m: m["model"]["features"].update(architecture="transformer"))
    with pytest.raises(SurrogateFormatError, match="architecture cannot be built.*transformer"):
        load(saved)


@pytest.mark.parametrize("content", [b"not json at all", b"\xff\xfe\x00", b"[" * 100000])
def test_metadata_that_is_not_json(saved, content):
    (saved / "metadata.json").write_bytes(content)
    with pytest.raises(SurrogateFormatError, match="metadata.json: not valid JSON"):
        load(saved)


def test_weights_file_outside_the_folder_is_refused(saved, tmp_path):
    (tmp_path / "elsewhere.npz").write_bytes((saved / "weights.npz").read_bytes())
    edit_metadata(saved, lambda m: m.update(weights_file="../elsewhere.npz"))
    with pytest.raises(SurrogateFormatError, match="weights_file must be a file name"):
        load(saved)
