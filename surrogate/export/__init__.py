"""Exporters of trained surrogates to other runtimes (a layer above the surrogate core).

:func:`export_onnx` (command ``export-surrogate``) writes the surrogate as an ONNX graph
(input ``y`` (batch, n_in) float64 -> output ``c`` (batch, n_out) float64, optionally
``dc_dy`` (batch, n_out, n_in)), callable from C++, Julia, MATLAB, ... through onnxruntime.
See docs/export.md. Needs the optional dependency group ``export`` (onnx; onnxruntime for the
check against the torch model). Importing this package does not import onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from surrogate.export.onnx import export_onnx

__all__ = ["export_onnx"]


def __getattr__(name: str) -> Any:
    """Lazy ``export_onnx`` (onnx is imported on first use)."""
    if name == "export_onnx":
        from surrogate.export.onnx import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
