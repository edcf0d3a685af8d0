"""Speed of the surrogate as a UQ model: evaluations/s, single-call latency, Jacobian cost,
UM-Bridge round trip on loopback. Prints a table (no thresholds; figures for README.uq.md).

    python bench/bench_uq.py                     # SPEC-sized DCR and CDR networks
    python bench/bench_uq.py --model MODEL_DIR   # a trained surrogate
    python bench/bench_uq.py --threads 2 --json bench-output/uq.json

Without --model, networks with the SPEC 4 architectures and random weights are timed (speed
does not depend on the weight values): DCR 3 -> 882, Neural ODE width 16, 8 RK4 steps; CDR
55 -> 72, width 8, 8 steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import surrogate  # noqa: E402
from surrogate import NeuralODE, Normalizer, SeparableModel, save_surrogate  # noqa: E402


def synthetic(directory: Path, n_in: int, n_out: int, width: int, n_steps: int) -> Path:
    g = torch.Generator().manual_seed(0)
    F = NeuralODE(n_in, width, n_steps, generator=g)
    norm = Normalizer(n_in, n_out, center_targets=True).fit(
        torch.rand(100, n_in, dtype=torch.float64, generator=g),
        torch.rand(100, n_out, dtype=torch.float64, generator=g))
    model = SeparableModel(F, n_out, norm)
    with torch.no_grad():
        model.W.normal_(generator=g)
    box = {"names": [f"y{k}" for k in range(n_in)], "lower": [0.0] * n_in,
           "upper": [1.0] * n_in, "box": "synthetic"}
    save_surrogate(model, directory, {"problem": "synthetic"}, extra={"inputs": box})
    return directory


#: "wall" (perf_counter) or "cpu" (process_time: this process's CPU seconds, which on a busy
#: shared machine is much closer to the unloaded wall time than the wall clock)
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def per_call(fn, min_time: float = 0.5) -> float:
    """Median seconds per call of fn() over repeated blocks lasting ~min_time in total."""
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


def umbridge_round_trip(model_dir: Path, y: np.ndarray) -> dict:
    import umbridge

    global clock
    saved, clock = clock, time.perf_counter      # the server's time is in another process
    proc = subprocess.Popen([sys.executable, "-m", "surrogate.serving", str(model_dir),
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split()[0]
        client = umbridge.HTTPModel(url, "surrogate")
        p = [y.tolist()]
        sens = [1.0] * client.get_output_sizes()[0]
        import requests

        session = requests.Session()                 # keep-alive: the server's own latency
        body = {"name": "surrogate", "input": p}
        return {"session_evaluate_s": per_call(
                    lambda: session.post(url + "/Evaluate", json=body).json()),
                "evaluate_s": per_call(lambda: client(p)),
                "gradient_s": per_call(lambda: client.gradient(0, 0, p, sens)),
                "apply_jacobian_s": per_call(
                    lambda: client.apply_jacobian(0, 0, p, [1.0] * len(y)))}
    finally:
        clock = saved
        proc.terminate()
        proc.wait(timeout=30)


def bench(name: str, model_dir: Path, server: bool) -> dict:
    m = surrogate.load(model_dir)
    rng = np.random.default_rng(0)
    lo = m.lower if m.lower is not None else np.zeros(m.n_in)
    hi = m.upper if m.upper is not None else np.ones(m.n_in)
    Y = lo + (hi - lo) * rng.random((10_000, m.n_in))
    y1 = Y[0]
    tm = m.torch_model
    r = {"model": name, "n_in": m.n_in, "n_out": m.n_out, "numpy_path": m.uses_numpy_path,
         "call_single_s": per_call(lambda: m(y1)),
         "torch_predict_single_s": per_call(lambda: tm.predict(Y[:1])),
         "jacobian_single_s": per_call(lambda: m.jacobian(y1)),
         "value_and_jacobian_single_s": per_call(lambda: m.value_and_jacobian(y1)),
         "torch_jacobian_single_s": per_call(lambda: m._torch_jacobian(Y[:1])),
         "vjp_single_s": per_call(lambda: m.vjp(y1, np.ones(m.n_out)))}
    for n in (1, 100, 10_000):
        t = per_call(lambda n=n: m(Y[:n]), min_time=1.0)
        r[f"evals_per_s_n{n}"] = n / t
        t = per_call(lambda n=n: tm.predict(Y[:n]), min_time=1.0)
        r[f"torch_evals_per_s_n{n}"] = n / t
    t = per_call(lambda: m.jacobian(Y[:100]), min_time=1.0)
    r["jacobian_per_sample_s_n100"] = t / 100
    if server:
        r["umbridge"] = umbridge_round_trip(model_dir, y1)
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="trained surrogate directory (default: synthetic ones)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-server", action="store_true", help="skip the UM-Bridge round trip")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                   help="wall (default) or cpu: CPU seconds of this process (the UM-Bridge "
                   "round trip is always wall time)")
    args = p.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            targets = [("model", Path(args.model))]
        else:
            targets = [("DCR 3->882 w16 d8", synthetic(Path(tmp) / "dcr", 3, 882, 16, 8)),
                       ("CDR 55->72 w8 d8", synthetic(Path(tmp) / "cdr", 55, 72, 8, 8))]
        for name, d in targets:
            results.append(bench(name, d, server=not args.no_server))
    us = 1e6
    for r in results:
        print(f"== {r['model']} (torch threads {args.threads}, NumPy path {r['numpy_path']}, "
              f"{args.clock} clock)")
        print(f"  single call           {r['call_single_s'] * us:8.1f} us   "
              f"(torch predict {r['torch_predict_single_s'] * us:8.1f} us)")
        print(f"  single Jacobian       {r['jacobian_single_s'] * us:8.1f} us   "
              f"(value+Jacobian {r['value_and_jacobian_single_s'] * us:.1f} us; torch fallback "
              f"(one batched jvp) {r['torch_jacobian_single_s'] * us:.1f} us; vjp "
              f"{r['vjp_single_s'] * us:.1f} us)")
        print(f"  Jacobian, batch 100   {r['jacobian_per_sample_s_n100'] * us:8.1f} us per "
              "sample")
        for n in (1, 100, 10_000):
            print(f"  evaluations/s n={n:<6} {r[f'evals_per_s_n{n}']:12.0f}   "
                  f"(torch predict {r[f'torch_evals_per_s_n{n}']:12.0f})")
        if "umbridge" in r:
            u = r["umbridge"]
            print(f"  UM-Bridge loopback    Evaluate {u['evaluate_s'] * 1e3:.2f} ms, Gradient "
                  f"{u['gradient_s'] * 1e3:.2f} ms, ApplyJacobian "
                  f"{u['apply_jacobian_s'] * 1e3:.2f} ms per request (umbridge.HTTPModel, a new "
                  f"connection each); Evaluate on a keep-alive requests.Session "
                  f"{u['session_evaluate_s'] * 1e3:.2f} ms")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
