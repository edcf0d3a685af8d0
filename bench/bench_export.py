"""Single-call latency of an exported ONNX surrogate (onnxruntime, 1 sample) against
``surrogate.load(dir)(y)``, plus batched throughput and the agreement of the two. Prints a
table (no thresholds; figures for docs/export.md).

    python bench/bench_export.py                     # SPEC-sized DCR and CDR networks
    python bench/bench_export.py --model MODEL_DIR   # a trained surrogate
    python bench/bench_export.py --clock cpu --json bench-output/export.json

Without --model, networks with the SPEC 4 architectures and random weights are timed (speed
does not depend on the weight values): DCR 3 -> 882 with the periodic angle encoding, Neural
ODE width 16, 8 RK4 steps; CDR 55 -> 72, width 8, 8 steps. onnxruntime and torch run on one
thread each (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402

import surrogate  # noqa: E402
from surrogate import NeuralODE, Normalizer, SeparableModel, save_surrogate  # noqa: E402
from surrogate.encoding import PeriodicEncoding  # noqa: E402
from surrogate.export.onnx import export_onnx, max_relative_error  # noqa: E402

#: "wall" (perf_counter) or "cpu" (process_time: on a busy shared machine much closer to the
#: unloaded wall time than the wall clock)
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def synthetic(directory: Path, n_in: int, n_out: int, width: int, n_steps: int,
              periodic: dict[int, float] | None = None) -> Path:
    """A model of the given size with random weights (and the periodic encoding)."""
    g = torch.Generator().manual_seed(0)
    encoding = PeriodicEncoding(n_in, periodic) if periodic else None
    n_net = encoding.n_out if encoding is not None else n_in
    F = NeuralODE(n_net, width, n_steps, generator=g)
    norm = Normalizer(n_net, n_out, center_targets=True).fit(
        torch.rand(100, n_net, dtype=torch.float64, generator=g),
        torch.rand(100, n_out, dtype=torch.float64, generator=g))
    model = SeparableModel(F, n_out, norm, encoding=encoding)
    with torch.no_grad():
        model.W.normal_(generator=g)
    upper = [1.0] * n_in
    for k, period in (periodic or {}).items():
        upper[k] = period
    box = {"names": [f"y{k}" for k in range(n_in)], "lower": [0.0] * n_in, "upper": upper,
           "box": "synthetic"}
    save_surrogate(model, directory, {"problem": "synthetic"}, extra={"inputs": box})
    return directory


def per_call(fn: Callable[[], object], min_time: float = 0.5) -> float:
    """Median seconds per call of fn() over 5 blocks lasting ~min_time in total."""
    fn()
    n, t = 1, 0.0
    while t < 0.05:
        t0 = clock()
        for _ in range(n):
            fn()
        t = clock() - t0
        n *= 2
    reps = max(1, int(n * min_time / max(t, 1e-9) / 5))
    blocks = []
    for _ in range(5):
        t0 = clock()
        for _ in range(reps):
            fn()
        blocks.append((clock() - t0) / reps)
    return float(np.median(blocks))


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench(name: str, model_dir: Path, work: Path, threads: int) -> dict:
    m = surrogate.load(model_dir)
    t0 = time.perf_counter()
    value_path = export_onnx(m, work / f"{name}.onnx")
    export_s = time.perf_counter() - t0
    jac_path = export_onnx(m, work / f"{name}-jacobian.onnx", jacobian=True)
    sv, sj = session(value_path, threads), session(jac_path, threads)
    rng = np.random.default_rng(0)
    lo = m.lower if m.lower is not None else np.zeros(m.n_in)
    hi = m.upper if m.upper is not None else np.ones(m.n_in)
    Y = lo + (hi - lo) * rng.random((1000, m.n_in))
    y1, Y1 = Y[0], Y[:1]
    onnx_c = sj.run(None, {"y": Y})
    r = {"model": name, "n_in": m.n_in, "n_out": m.n_out, "numpy_path": m.uses_numpy_path,
         "export_s": export_s, "onnx_bytes": value_path.stat().st_size,
         "max_rel_err_c": max_relative_error(onnx_c[0], m(Y)),
         "max_rel_err_jacobian": max_relative_error(onnx_c[1], m.jacobian(Y)),
         "onnx_single_s": per_call(lambda: sv.run(["c"], {"y": Y1})),
         "load_call_single_s": per_call(lambda: m(y1)),
         "torch_predict_single_s": per_call(lambda: m.torch_model.predict(Y1)),
         "onnx_jacobian_single_s": per_call(lambda: sj.run(None, {"y": Y1})),
         "load_value_and_jacobian_single_s": per_call(lambda: m.value_and_jacobian(y1))}
    for n in (100, 1000):
        r[f"onnx_evals_per_s_n{n}"] = n / per_call(lambda n=n: sv.run(["c"], {"y": Y[:n]}))
        r[f"load_evals_per_s_n{n}"] = n / per_call(lambda n=n: m(Y[:n]))
    return r


def table(results: list[dict]) -> str:
    us = 1e6
    rows = [("single call, onnxruntime (1 sample)", "onnx_single_s", us, "{:.0f} µs"),
            ("single call, surrogate.load(dir)(y)", "load_call_single_s", us, "{:.0f} µs"),
            ("single call, torch predict", "torch_predict_single_s", us, "{:.0f} µs"),
            ("value + Jacobian, onnxruntime", "onnx_jacobian_single_s", us, "{:.0f} µs"),
            ("value + Jacobian, surrogate.load", "load_value_and_jacobian_single_s", us,
             "{:.0f} µs"),
            ("evaluations/s n = 100, onnxruntime", "onnx_evals_per_s_n100", 1, "{:,.0f}"),
            ("evaluations/s n = 100, surrogate.load", "load_evals_per_s_n100", 1, "{:,.0f}"),
            ("evaluations/s n = 1000, onnxruntime", "onnx_evals_per_s_n1000", 1, "{:,.0f}"),
            ("evaluations/s n = 1000, surrogate.load", "load_evals_per_s_n1000", 1, "{:,.0f}"),
            ("max rel. error c (1000 samples)", "max_rel_err_c", 1, "{:.1e}"),
            ("max rel. error dc/dy (1000 samples)", "max_rel_err_jacobian", 1, "{:.1e}"),
            ("export time", "export_s", 1, "{:.2f} s"),
            ("ONNX file (value only)", "onnx_bytes", 1 / 1024, "{:.0f} KiB")]
    head = "| | " + " | ".join(f"{r['model']} {r['n_in']} → {r['n_out']}" for r in results)
    lines = [head + " |", "|---" * (len(results) + 1) + "|"]
    for label, key, factor, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt.format(r[key] * factor) for r in results)
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="trained surrogate directory (default: synthetic ones)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and onnxruntime CPU threads (default 1)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                   help="wall (default) or cpu: CPU seconds of this process")
    args = p.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", surrogate.OutOfBoxWarning)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model:
            models = [("model", Path(args.model))]
        else:
            models = [("DCR", synthetic(work / "dcr", 3, 882, 16, 8, {2: float(np.pi)})),
                      ("CDR", synthetic(work / "cdr", 55, 72, 8, 8))]
        results = [bench(name, d, work, args.threads) for name, d in models]
    print(f"clock: {args.clock}, threads: {args.threads}, onnxruntime {ort.__version__}, "
          f"torch {torch.__version__}")
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
