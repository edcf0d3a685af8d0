"""A trained surrogate as an ONNX graph: ``export_onnx(model_dir, "model.onnx")``.

The graph maps the raw physical parameters to the observables in physical units, with
everything the Python model does inside it (input encoding, input normalisation, feature
extractor, ``W [F; 1]``, inverse target normalisation)::

    input   y      (batch, n_in)          float64, physical units (the raw parameters)
    output  c      (batch, n_out)         float64, physical units
    output  dc_dy  (batch, n_out, n_in)   float64, only with ``jacobian=True``

The batch axis is dynamic. Clients should look the outputs up by name (an ensemble adds the
output ``std``, see below). The graph does no input checks: NaN gives NaN, and a y outside
the training box (``metadata_props["varpro.lower"/"varpro.upper"]``) is extrapolated silently.

How the graph is built
----------------------
The graph is written node by node with :mod:`onnx.helper` from the weights, not traced by
``torch.onnx.export``: torch's exporter (2.14, dynamo) stores Python scalars of the forward
pass (the RK4 weight ``h / 6``) as float32 values, which costs 1e-8 relative in a float64
network, and it cannot export ``torch.func.jacfwd``. Here every constant is the float64 (or the
network's float32) array of the torch model, and each layer is written once as an operation on
a *dual* value ``(v, T)``: the state ``v`` (batch, k) and its tangents ``T = dv/dy`` (batch or 1,
n_in, k), one row per input direction. The value graph uses ``v`` only; ``jacobian=True`` adds
the tangent nodes, i.e. forward-mode differentiation unrolled into the graph (exact to
round-off, no finite differences). The exported graph is run with onnxruntime, when installed,
against the torch model before the file is written (:func:`check_onnx`).

Ensembles (issue 19)
--------------------
:func:`build_onnx_model` takes a list of members (``SeparableModel``). Each member becomes
its own sub-graph (names prefixed ``m0/``, ``m1/``, ...); ``c`` is their mean, ``dc_dy`` the
mean of their Jacobians and, with ``std=True`` and K >= 2 members, the output ``std`` (batch,
n_out) is ``std_scale * sqrt(sum_k (c_k - c)^2 / (K - ddof))``. :func:`export_onnx` exports an
ensemble directory (``train-surrogate --ensemble K``) this way, with its calibration factor:
outputs ``c`` and ``std`` (and ``dc_dy``), checked against
``surrogate.load(dir).predict(y, return_std=True)``.

Supported models: :class:`~surrogate.neural_ode.NeuralODE` and
:class:`~surrogate.resnet.ResNet` extractors (float64 or float32 weights; a float32 network is
computed in float32 inside the graph exactly as torch does, between float64 casts), no input
encoding or :class:`~surrogate.encoding.PeriodicEncoding`. Anything else raises
:class:`ExportError`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from solvers.common.atomic import resolve_output, write_bytes_atomic
from surrogate.encoding import PeriodicEncoding
from surrogate.ensemble import EnsembleSurrogate
from surrogate.errors import ExportCheckError, ExportError
from surrogate.neural_ode import NeuralODE
from surrogate.resnet import ResNet
from surrogate.separable import SeparableModel
from surrogate.uq_model import OutOfBoxWarning, SurrogateModel, load

if TYPE_CHECKING:
    import torch

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("exporting to ONNX needs the onnx package: pip install "
                      "'varpro-surrogates[export]' (onnx, onnxruntime)") from _exc

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "JACOBIAN_NAME", "MIN_OPSET", "OUTPUT_NAME",
           "STD_NAME", "ExportCheckError", "ExportError", "build_onnx_model", "check_onnx",
           "export_onnx", "max_relative_error"]

#: graph input and output names (the documented interface)
INPUT_NAME, OUTPUT_NAME, JACOBIAN_NAME, STD_NAME = "y", "c", "dc_dy", "std"
#: the graph uses only operators whose current definitions date from opset 13 or earlier
MIN_OPSET = 13
#: the default opset: the oldest that works, for old runtimes and importers (MATLAB)
DEFAULT_OPSET = 13
#: onnxruntime check before writing: largest accepted relative deviation per network dtype
CHECK_TOLERANCE = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}
PRODUCER = "varpro-surrogates export-surrogate"

_DTYPE_CODES = {np.dtype(np.float64): TensorProto.DOUBLE, np.dtype(np.float32): TensorProto.FLOAT}


# --------------------------------------------------------------------------- graph builder
@dataclass(frozen=True)
class Dual:
    """A graph value with its forward-mode tangents.

    Attributes
    ----------
    value : str
        Name of a tensor of shape (batch, k).
    tangent : str or None
        Name of ``d value / d y`` laid out as (batch or 1, n_in, k) (row j: the derivative in
        input direction j); None when the Jacobian is not exported.
    """

    value: str
    tangent: str | None


class GraphBuilder:
    """Collects the nodes and initializers of one ONNX graph; names are made unique.

    Parameters
    ----------
    jacobian : bool
        Whether the dual operations also build the tangent nodes.
    """

    def __init__(self, jacobian: bool) -> None:
        self.jacobian = bool(jacobian)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = set()
        self._scope: list[str] = []

    # ----------------------------------------------------------------- naming and primitives
    def scoped(self, scope: str) -> _Scope:
        """Context manager prefixing the names created inside with ``scope/``."""
        return _Scope(self, scope)

    def name(self, base: str) -> str:
        """A fresh tensor or node name ``scope/base`` (suffixed ``_2``, ... when taken)."""
        stem = "/".join([*self._scope, base])
        name, i = stem, 1
        while name in self._used:
            i += 1
            name = f"{stem}_{i}"
        self._used.add(name)
        return name

    def const(self, array: np.ndarray | float, base: str, dtype: np.dtype | type) -> str:
        """An initializer holding ``array`` cast to ``dtype``; returns its name."""
        name = self.name(base)
        arr = np.ascontiguousarray(np.asarray(array, dtype=dtype))
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values: Sequence[int], base: str) -> str:
        """A 1-D int64 initializer (axes, indices, shapes)."""
        return self.const(np.asarray(values, dtype=np.int64), base, np.int64)

    def op(self, op_type: str, *inputs: str | None, out: str | None = None,
           **attrs: Any) -> str:
        """Append a node with one output; returns the output's name (``out`` if given).

        An input of None is a tangent asked for in a graph built without the Jacobian.
        """
        if any(name is None for name in inputs):
            raise RuntimeError(f"{op_type}: a tangent input in a graph without the Jacobian")
        names = [name for name in inputs if name is not None]
        output = out if out is not None else self.name(op_type.lower())
        if out is not None:
            self._used.add(out)
        self.nodes.append(helper.make_node(op_type, names, [output],
                                           name=self.name(f"{op_type}_node"), **attrs))
        return output

    # ----------------------------------------------------------------- dual operations
    def linear(self, x: Dual, matrix_t: np.ndarray, bias: np.ndarray, base: str,
               dtype: np.dtype) -> Dual:
        """``x @ matrix_t + bias`` (one Gemm node); tangent ``T @ matrix_t``.

        Parameters
        ----------
        x : Dual
            Value (batch, k).
        matrix_t : numpy.ndarray, shape (k, w)
        bias : numpy.ndarray, shape (w,)
        """
        m = self.const(matrix_t, f"{base}.matrix_t", dtype)
        value = self.op("Gemm", x.value, m, self.const(bias, f"{base}.bias", dtype))
        tangent = self.op("MatMul", x.tangent, m) if self.tangents(x) else None
        return Dual(value, tangent)

    def tanh(self, x: Dual, dtype: np.dtype) -> Dual:
        """``tanh(v)``; tangent ``T * (1 - tanh(v)^2)`` broadcast over the directions."""
        value = self.op("Tanh", x.value)
        if not self.tangents(x):
            return Dual(value, None)
        slope = self.op("Sub", self.const(1.0, "one", dtype), self.op("Mul", value, value))
        slope = self.op("Unsqueeze", slope, self.ints([1], "axis1"))
        return Dual(value, self.op("Mul", x.tangent, slope))

    def scale(self, x: Dual, factor: float | np.ndarray, dtype: np.dtype,
              divide: bool = False) -> Dual:
        """``v * factor`` (or ``v / factor``); the factor broadcasts along the last axis."""
        f = self.const(factor, "factor", dtype)
        kind = "Div" if divide else "Mul"
        return Dual(self.op(kind, x.value, f),
                    self.op(kind, x.tangent, f) if self.tangents(x) else None)

    def add(self, x: Dual, y: Dual) -> Dual:
        """``x + y`` (values and tangents)."""
        both = self.tangents(x) and self.tangents(y)
        return Dual(self.op("Add", x.value, y.value),
                    self.op("Add", x.tangent, y.tangent) if both else None)

    def shift(self, x: Dual, offset: np.ndarray, dtype: np.dtype, subtract: bool) -> Dual:
        """``v - offset`` or ``v + offset``; the tangent is unchanged."""
        o = self.const(offset, "offset", dtype)
        return Dual(self.op("Sub" if subtract else "Add", x.value, o), x.tangent)

    def cast(self, x: Dual, dtype: np.dtype) -> Dual:
        """Both parts cast to ``dtype`` (float64 or float32)."""
        to = _DTYPE_CODES[np.dtype(dtype)]
        return Dual(self.op("Cast", x.value, to=to),
                    self.op("Cast", x.tangent, to=to) if self.tangents(x) else None)

    def tangents(self, x: Dual) -> bool:
        """Whether the tangent of ``x`` is built."""
        return self.jacobian and x.tangent is not None


class _Scope:
    def __init__(self, builder: GraphBuilder, scope: str) -> None:
        self.builder, self.scope = builder, scope

    def __enter__(self) -> GraphBuilder:
        self.builder._scope.append(self.scope)
        return self.builder

    def __exit__(self, *exc: object) -> None:
        self.builder._scope.pop()


# --------------------------------------------------------------------------- model pieces
def _npy(t: torch.Tensor, dtype: np.dtype | type | None = None) -> np.ndarray:
    """A tensor's values as a NumPy array (its own dtype unless ``dtype``)."""
    arr = t.detach().cpu().numpy()
    return arr if dtype is None else arr.astype(dtype)


def _identity_input(g: GraphBuilder, y: str, n_in: int) -> Dual:
    """The raw input as a dual: tangent = identity (1, n_in, n_in) (broadcast over batch)."""
    tangent = g.const(np.eye(n_in)[None], "dy_dy", np.float64) if g.jacobian else None
    return Dual(y, tangent)


def _periodic_encoding(g: GraphBuilder, y: str, enc: PeriodicEncoding) -> Dual:
    """Each periodic column y_k -> (cos(w_k y_k), sin(w_k y_k)), w_k = 2 pi / P_k, in place;
    other columns unchanged (:class:`~surrogate.encoding.PeriodicEncoding`, float64).

    The tangent is ``g[:, None, :] * P``: P (n_in, n_out) selects the raw column of each
    encoded column, g (batch, n_out) holds d z_e / d y_k (1; -w sin; w cos).
    """
    f64 = np.float64
    cols: list[str] = []
    slopes: list[str | None] = []
    ones = None
    if g.jacobian:
        batch = g.op("Gather", g.op("Shape", y), g.ints([0], "batch_axis"), axis=0)
        shape = g.op("Concat", batch, g.ints([1], "one_column"), axis=0)
        ones = g.op("ConstantOfShape", shape,
                    value=numpy_helper.from_array(np.ones(1, dtype=f64)))
    select = np.zeros((enc.n_in, enc.n_out))
    e = 0
    for j in range(enc.n_in):
        col = g.op("Gather", y, g.ints([j], f"column{j}"), axis=1)          # (batch, 1)
        if j not in enc.periods:
            cols.append(col)
            slopes.append(ones)
            select[j, e] = 1.0
            e += 1
            continue
        omega = 2.0 * math.pi / enc.periods[j]            # as PeriodicEncoding.forward
        w = g.const(omega, f"omega{j}", f64)
        phase = g.op("Mul", col, w)
        cos, sin = g.op("Cos", phase), g.op("Sin", phase)
        cols += [cos, sin]
        if g.jacobian:
            slopes += [g.op("Mul", sin, g.const(-omega, f"minus_omega{j}", f64)),
                       g.op("Mul", cos, w)]
        select[j, e:e + 2] = 1.0
        e += 2
    value = g.op("Concat", *cols, axis=1)
    if not g.jacobian:
        return Dual(value, None)
    slope = g.op("Unsqueeze", g.op("Concat", *slopes, axis=1), g.ints([1], "axis1"))
    return Dual(value, g.op("Mul", slope, g.const(select, "select", f64)))


def _neural_ode(g: GraphBuilder, u: Dual, F: NeuralODE, dtype: np.dtype) -> Dual:
    """RK4 steps of :meth:`~surrogate.neural_ode.NeuralODE.forward` (same expressions)."""
    K, b = _npy(F.K), _npy(F.b)
    A = K - K.transpose(0, 2, 1) - dtype.type(F.gamma) * np.eye(F.width, dtype=dtype)
    At = A.transpose(0, 2, 1)
    h = F.final_time / F.n_steps
    for j in range(F.n_steps):
        with g.scoped(f"step{j}"):
            node0, node1 = (At[j], b[j]), (At[j + 1], b[j + 1])
            mid = (0.5 * (At[j] + At[j + 1]), 0.5 * (b[j] + b[j + 1]))   # weights at t + h/2
            stages: list[Dual] = []
            for i, (offset, (Aw, bw)) in enumerate(
                    ((0.0, node0), (0.5 * h, mid), (0.5 * h, mid), (h, node1))):
                x = u if i == 0 else g.add(u, g.scale(stages[-1], offset, dtype))
                stages.append(g.tanh(g.linear(x, Aw, bw, f"stage{i + 1}", dtype), dtype))
            k1, k2, k3, k4 = stages
            total = g.add(g.add(g.add(k1, g.scale(k2, 2.0, dtype)), g.scale(k3, 2.0, dtype)),
                          k4)
            u = g.add(u, g.scale(total, h / 6.0, dtype))
    return u


def _resnet(g: GraphBuilder, u: Dual, F: ResNet, dtype: np.dtype) -> Dual:
    """Residual layers of :meth:`~surrogate.resnet.ResNet.forward`."""
    K, b = _npy(F.K), _npy(F.b)
    h = F.final_time / F.n_steps
    for j in range(F.n_steps):
        with g.scoped(f"layer{j}"):
            a = g.tanh(g.linear(u, K[j].T, b[j], "layer", dtype), dtype)
            u = g.add(u, g.scale(a, h, dtype))
    return u


#: feature extractors the exporter writes (exact types: a subclass may change the forward)
FEATURES: dict[type, Callable[..., Dual]] = {
    NeuralODE: _neural_ode, ResNet: _resnet}
#: input encodings (None: the identity)
ENCODINGS: dict[type, Callable[..., Dual]] = {
    PeriodicEncoding: _periodic_encoding}


def check_exportable(model: SeparableModel) -> None:
    """Raise :class:`ExportError` unless :func:`build_onnx_model` can write ``model``."""
    F, enc = model.features, getattr(model, "encoding", None)
    if type(F) not in FEATURES:
        raise ExportError(f"cannot export the feature extractor {type(F).__name__}; supported: "
                          f"{', '.join(t.__name__ for t in FEATURES)}")
    if enc is not None and type(enc) not in ENCODINGS:
        raise ExportError(f"cannot export the input encoding {type(enc).__name__}; supported: "
                          f"{', '.join(t.__name__ for t in ENCODINGS)}")
    net = np.dtype(_npy(model.W).dtype)
    if net not in _DTYPE_CODES:
        raise ExportError(f"cannot export a {net} network (float64 or float32 only)")


def _member(g: GraphBuilder, y: str, model: SeparableModel) -> Dual:
    """Physical-units forward pass of one model, as ``SurrogateModel._phys``:
    encoding -> normalisation (float64) -> network (its dtype) -> inverse normalisation."""
    f64 = np.dtype(np.float64)
    norm, F, enc = model.normalizer, model.features, getattr(model, "encoding", None)
    with g.scoped("encoding"):
        x = (_identity_input(g, y, model.n_in) if enc is None
             else ENCODINGS[type(enc)](g, y, enc))
    with g.scoped("normalize"):
        x = g.scale(g.shift(x, _npy(norm.y_shift, f64), f64, subtract=True),
                    _npy(norm.y_scale, f64), f64, divide=True)
    net = np.dtype(_npy(model.W).dtype)
    if net != f64:
        x = g.cast(x, net)
    with g.scoped("features"):
        with g.scoped("opening"):
            u = g.tanh(g.linear(x, _npy(F.K_in).T, _npy(F.b_in), "K_in", net), net)
        u = FEATURES[type(F)](g, u, F, net)
    with g.scoped("output"):
        W = _npy(model.W)
        c = g.linear(u, W[:, :-1].T, W[:, -1], "W", net)
        if net != f64:
            c = g.cast(c, f64)
        c = g.shift(g.scale(c, _npy(norm.c_scale, f64), f64), _npy(norm.c_shift, f64), f64,
                    subtract=False)
    return c


def _combine(g: GraphBuilder, parts: list[Dual], *, std: bool, std_scale: float,
             ddof: int) -> dict[str, str]:
    """Graph outputs from the members' duals: ``c`` (mean), ``dc_dy`` (mean Jacobian,
    transposed to (batch, n_out, n_in)), ``std`` (ensemble spread)."""
    f64 = np.float64
    K = len(parts)
    with g.scoped("ensemble"):
        if K == 1:
            mean = parts[0]
        else:
            inv_k = g.const(1.0 / K, "inv_members", f64)
            mean_v = g.op("Mul", g.op("Sum", *[p.value for p in parts]), inv_k)
            mean_t = (g.op("Mul", g.op("Sum", *[p.tangent for p in parts]), inv_k)
                      if g.jacobian else None)
            mean = Dual(mean_v, mean_t)
        outputs = {OUTPUT_NAME: g.op("Identity", mean.value, out=OUTPUT_NAME)}
        if g.jacobian:
            outputs[JACOBIAN_NAME] = g.op("Transpose", mean.tangent, perm=[0, 2, 1],
                                          out=JACOBIAN_NAME)
        if std:
            squares = []
            for p in parts:
                d = g.op("Sub", p.value, mean.value)
                squares.append(g.op("Mul", d, d))
            var = g.op("Mul", g.op("Sum", *squares), g.const(1.0 / (K - ddof), "inv_dof", f64))
            outputs[STD_NAME] = g.op("Mul", g.op("Sqrt", var),
                                     g.const(float(std_scale), "std_scale", f64), out=STD_NAME)
    return outputs


def _check_opset(opset: int | None) -> int:
    latest = onnx.defs.onnx_opset_version()
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int | np.integer) or not (
            MIN_OPSET <= opset <= latest):
        raise ExportError(f"--opset must be a whole number from {MIN_OPSET} to {latest} (the "
                          f"newest opset of the installed onnx package), got {opset!r}")
    return int(opset)


def build_onnx_model(members: Sequence[SeparableModel], *, jacobian: bool = False,
                     opset: int | None = None, std: bool = False, std_scale: float = 1.0,
                     ddof: int = 1, metadata: dict[str, str] | None = None
                     ) -> onnx.ModelProto:
    """The ONNX model of a surrogate (one member) or of an ensemble's mean (and std).

    Parameters
    ----------
    members : sequence of SeparableModel
        One model, or the K members of an ensemble (same n_in and n_out).
    jacobian : bool
        Add the output ``dc_dy`` (batch, n_out, n_in), d c / d y in physical units.
    opset : int, optional
        ONNX opset of the default domain (default :data:`DEFAULT_OPSET`).
    std : bool
        Add the output ``std`` (batch, n_out): the members' spread (needs K >= 2).
    std_scale : float
        Calibration factor of the spread.
    ddof : int
        Delta degrees of freedom of the spread (divisor K - ddof).
    metadata : dict of str -> str, optional
        Stored as the model's ``metadata_props``.

    Returns
    -------
    onnx.ModelProto
        Checked by :func:`onnx.checker.check_model` (with shape inference).

    Raises
    ------
    ExportError
        Unsupported architecture, encoding or dtype; inconsistent members; bad opset.
    """
    members = list(members)
    opset = _check_opset(opset)
    if not members:
        raise ExportError("nothing to export: no model given")
    for member in members:
        check_exportable(member)
    n_in, n_out = members[0].n_in, members[0].n_out
    if any((m.n_in, m.n_out) != (n_in, n_out) for m in members):
        raise ExportError("the ensemble members differ in their numbers of inputs or outputs")
    if std and len(members) - ddof < 1:
        raise ExportError(f"a std output needs more than {ddof} member(s), got {len(members)}")
    g = GraphBuilder(jacobian)
    parts = []
    for k, member in enumerate(members):
        with g.scoped(f"m{k}"):
            parts.append(_member(g, INPUT_NAME, member.eval()))
    outputs = _combine(g, parts, std=std, std_scale=std_scale, ddof=ddof)
    dbl = TensorProto.DOUBLE
    shapes: dict[str, list[str | int]] = {
        OUTPUT_NAME: ["batch", n_out], JACOBIAN_NAME: ["batch", n_out, n_in],
        STD_NAME: ["batch", n_out]}
    docs = {OUTPUT_NAME: "observables c(y), physical units",
            JACOBIAN_NAME: "Jacobian dc/dy: dc_dy[b, i, k] = d c_i / d y_k at y[b]",
            STD_NAME: "predictive standard deviation of c, physical units"}
    graph = helper.make_graph(
        g.nodes, "varpro_surrogate",
        [helper.make_tensor_value_info(INPUT_NAME, dbl, ["batch", n_in],
                                       "parameters y, physical units (raw, before encoding)")],
        [helper.make_tensor_value_info(name, dbl, shapes[name], docs[name]) for name in outputs],
        g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER,
                              ir_version=helper.find_min_ir_version_for(opsets),
                              doc_string=__doc__.split("\n\n")[0])
    helper.set_model_props(model, dict(metadata or {}))
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- checking
def max_relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """Largest per-sample relative deviation ``max_b ||value_b - ref_b||_inf / ||ref_b||_inf``
    (all axes but the first taken together; a zero reference row uses 1 instead)."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    n = reference.shape[0]
    diff = np.abs(value - reference).reshape(n, -1).max(axis=1)
    size = np.abs(reference).reshape(n, -1).max(axis=1)
    return float(np.max(diff / np.where(size > 0, size, 1.0))) if n else 0.0


def sample_inputs(model: SurrogateModel, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniform in the training box (standard normal when the box is unknown),
    shape (n, n_in)."""
    rng = np.random.default_rng(seed)
    if model.lower is None:
        return rng.standard_normal((n, model.n_in))
    return model.lower + (model.upper - model.lower) * rng.random((n, model.n_in))


def run_onnx(model_bytes: bytes, y: np.ndarray, threads: int = 1) -> dict[str, np.ndarray]:
    """Run a serialized ONNX surrogate with onnxruntime (CPU); outputs by name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = int(threads)
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {INPUT_NAME: np.ascontiguousarray(y, dtype=np.float64)})
    return dict(zip(names, values, strict=True))


def check_onnx(model_bytes: bytes, reference: SurrogateModel, y: np.ndarray,
               tolerance: float | None = None) -> dict[str, float]:
    """Run the ONNX graph with onnxruntime and compare it with the torch model.

    Parameters
    ----------
    model_bytes : bytes
        Serialized ONNX model.
    reference : SurrogateModel
        ``c`` is compared with ``reference.predict(y)``, ``dc_dy`` with
        ``reference.jacobian(y)``, ``std`` with ``reference.predict(y, return_std=True)[1]``.
    y : numpy.ndarray, shape (n, n_in)
    tolerance : float, optional
        Raise :class:`ExportCheckError` above it (default: no limit).

    Returns
    -------
    dict
        Output name -> :func:`max_relative_error`.
    """
    out = run_onnx(model_bytes, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfBoxWarning)
        refs = {OUTPUT_NAME: reference.predict(y)}
        if STD_NAME in out:
            refs[STD_NAME] = reference.predict(y, return_std=True)[1]
        if JACOBIAN_NAME in out:
            refs[JACOBIAN_NAME] = reference.jacobian(y)
    errors = {name: max_relative_error(out[name], ref) for name, ref in refs.items()}
    limit = np.inf if tolerance is None else tolerance
    bad = {k: v for k, v in errors.items() if not v <= limit}      # NaN is bad too
    if bad:
        raise ExportCheckError(
            "the exported graph does not reproduce the torch model (max relative deviation "
            + ", ".join(f"{k}: {v:.3g}" for k, v in bad.items())
            + f"; tolerance {limit:g}); this is a bug of the exporter, please report it")
    return errors


# --------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes
    ----------
    path : Path
        The file written (symlinks resolved).
    outputs : list of str
        Output names, in graph order.
    n_in, n_out : int
    opset : int
    check : dict of str -> float, or None
        onnxruntime vs torch, max relative deviation per output (None: onnxruntime missing).
    n_bytes : int
    """

    path: Path
    outputs: list[str]
    n_in: int
    n_out: int
    opset: int
    check: dict[str, float] | None
    n_bytes: int


def _metadata_props(model: SurrogateModel) -> dict[str, str]:
    """Names, box and provenance as ``metadata_props`` strings (JSON where structured)."""
    def js(v: object) -> str:
        return json.dumps(v.tolist() if isinstance(v, np.ndarray) else v)

    extra = {"varpro.ensemble_size": js(len(model.members)),
             "varpro.std_scale": js(model.std_scale)} \
        if isinstance(model, EnsembleSurrogate) else {}
    return {**extra, "varpro.input_names": js(model.input_names),
            "varpro.output_names": js(model.output_names),
            "varpro.lower": js(model.lower), "varpro.upper": js(model.upper),
            "varpro.problem": model.problem,
            "varpro.weights_sha256": str(model.metadata.get("weights_sha256", "")),
            "varpro.interface": js({INPUT_NAME: "(batch, n_in) float64",
                                    OUTPUT_NAME: "(batch, n_out) float64",
                                    JACOBIAN_NAME: "(batch, n_out, n_in) float64, optional",
                                    STD_NAME: "(batch, n_out) float64, ensembles only"})}


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_details(model: str | os.PathLike | SurrogateModel, path: str | os.PathLike, *,
                   jacobian: bool = False, opset: int | None = None,
                   check: bool = True) -> ExportResult:
    """:func:`export_onnx` with a description of what was written (used by the CLI)."""
    target = resolve_output(path, "ONNX output")      # FIFO, folder, ...: refused up front
    surrogate = model if isinstance(model, SurrogateModel) else load(model)
    if isinstance(surrogate, EnsembleSurrogate):    # members' mean and calibrated spread
        members, std_scale, ddof = surrogate.member_models, surrogate.std_scale, surrogate.ddof
    else:
        members, std_scale, ddof = [surrogate.torch_model], 1.0, 1
    proto = build_onnx_model(members, jacobian=jacobian, opset=opset,
                             std=len(members) > 1, std_scale=std_scale, ddof=ddof,
                             metadata=_metadata_props(surrogate))
    data = proto.SerializeToString()
    errors = None
    if check and _onnxruntime_available():
        net = np.dtype(_npy(members[0].W).dtype)
        errors = check_onnx(data, surrogate, sample_inputs(surrogate, 64),
                            tolerance=CHECK_TOLERANCE[net])
    written = write_bytes_atomic(target, data, "ONNX output")
    return ExportResult(written, [o.name for o in proto.graph.output], surrogate.n_in,
                        surrogate.n_out, proto.opset_import[0].version, errors, len(data))


def export_onnx(model: str | os.PathLike | SurrogateModel, path: str | os.PathLike, *,
                jacobian: bool = False, opset: int | None = None) -> Path:
    """Write a trained surrogate as an ONNX file.

    Parameters
    ----------
    model : path or SurrogateModel
        A model directory written by ``train-surrogate`` (loaded with :func:`surrogate.load`)
        or a loaded model.
    path : path
        The ``.onnx`` file; written atomically (a temporary file renamed over it), so an
        existing file is replaced only by a complete one. A FIFO, device or folder there is
        refused.
    jacobian : bool
        Add the output ``dc_dy`` (batch, n_out, n_in).
    opset : int, optional
        ONNX opset (:data:`MIN_OPSET` to the installed onnx's newest; default
        :data:`DEFAULT_OPSET`).

    Returns
    -------
    Path
        The file written (symlinks resolved).

    Raises
    ------
    SurrogateFormatError
        Missing or corrupt model directory.
    ExportError
        Model or option not supported.
    OutputPathError
        ``path`` cannot be a regular file.
    ExportCheckError
        onnxruntime (when installed) does not reproduce the torch model on 64 points of the
        training box (1e-9 relative for a float64 network); nothing is written.
    OSError
        Writing failed (disk full, permissions).
    """
    return export_details(model, path, jacobian=jacobian, opset=opset).path
