"""``export-surrogate``: write a trained surrogate in a portable format (ONNX).

Examples
--------
::

    export-surrogate model/ --onnx model.onnx               # y (batch, n_in) -> c (batch, n_out)
    export-surrogate model/ --onnx model.onnx --jacobian    # + dc_dy (batch, n_out, n_in)
    export-surrogate model/ --onnx model.onnx --opset 17

Exit statuses: 0 written, 1 a failure while writing (full disk) or a failed check against the
torch model, 2 bad input (model directory, output path, option). See docs/export.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from solvers.common.cli import BAD_INPUT, FAILURE, OK, RankZeroParser, os_error_message
from solvers.errors import InputError, RunError

if TYPE_CHECKING:
    from surrogate.export.onnx import ExportResult

PROG = "export-surrogate"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = RankZeroParser(prog=PROG, description="Write a trained surrogate as an ONNX graph: "
                       "input y (batch, n_in) float64 in physical units, output c (batch, "
                       "n_out) float64 (normalisation, input encoding, features and W inside "
                       "the graph); callable from C++, Julia, MATLAB through onnxruntime.")
    p.add_argument("model", type=Path, metavar="MODEL_DIR",
                   help="model directory written by train-surrogate")
    p.add_argument("--onnx", required=True, type=Path, metavar="FILE",
                   help="the ONNX file to write (replaced atomically if it exists)")
    p.add_argument("--jacobian", action="store_true",
                   help="add a second output dc_dy (batch, n_out, n_in), forward mode in the "
                   "graph")
    p.add_argument("--opset", type=int, metavar="N",
                   help="ONNX opset of the graph (default 13, the oldest that works)")
    return p


def _describe(result: ExportResult) -> str:
    """The one-line summary printed after a successful export."""
    shapes = {"c": f"(batch, {result.n_out})", "std": f"(batch, {result.n_out})",
              "dc_dy": f"(batch, {result.n_out}, {result.n_in})"}
    outs = ", ".join(f"{name} {shapes.get(name, '')}" for name in result.outputs)
    text = (f"{PROG}: wrote {result.path} ({result.n_bytes / 1024:.1f} KiB, opset "
            f"{result.opset}): input y (batch, {result.n_in}) float64 -> {outs} float64")
    if result.check is None:
        return text + "; onnxruntime is not installed, the graph was not run"
    worst = ", ".join(f"{k} {v:.1e}" for k, v in result.check.items())
    return text + f"; onnxruntime vs torch on 64 points of the box: max relative deviation {worst}"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 failure, 2 bad input)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        from surrogate.export.onnx import export_details
    except ImportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return FAILURE
    try:
        result = export_details(args.model, args.onnx, jacobian=args.jacobian,
                                opset=args.opset)
    except InputError as exc:                      # model dir, output path, unsupported model
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except RunError as exc:                        # the graph does not match the torch model
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return FAILURE
    except OSError as exc:
        print(f"{PROG}: error: {os_error_message(exc)}", file=sys.stderr)
        return FAILURE
    print(_describe(result), flush=True)
    return OK


if __name__ == "__main__":
    sys.exit(main())
