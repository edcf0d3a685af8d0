"""A foreign 15 -> 10 dataset for bench/bench_peers.py (issue 18): a cheap analytic simulator
whose outputs have very different scales and some exact zeros.

    python bench/make_foreign_data.py --out bench-output/oscillator.npz [--n 2000 --seed 0]

The simulator is the steady harmonic response of a chain of three masses (m1 - m2 - m3, springs
k1 (ground - m1), k2, k3, dampers c1 - c3) driven at frequency w by a force of signed amplitude
F0 shared between m1 (1 - a) and m3 (a); m3 hits a stop at distance ``gap`` (contact stiffness
kc, counted when the amplitude exceeds the gap), and a static preload ``p F0`` acts on m3.
The complex amplitudes X solve ``(K - w^2 M + i w C) X = F0 [1 - a, 0, a]``.

Inputs (15, uniform): m1, m2, m3 [kg] in [1, 5]; k1, k2, k3 [kN/m] in [20, 200]; c1, c2, c3
[N s/m] in [20, 200]; F0 [N] in [-60, 60]; w [rad/s] in [1, 12] (below the first resonance:
smooth outputs); gap [mm] in [0, 0.1]; kc [kN/m] in [50, 500]; a in [0, 1]; p in [0, 0.5].

Outputs (10): Re X1, Re X2 [mm], Im X3 [um]; |X3| [um]; spring force k1 Re X1 [N]; contact force
kc max(0, |X3| - gap) [N] (exact zeros without contact); mean dissipated power
w^2 / 2 sum_i c_i |X_i - X_(i-1)|^2 [mW] (X_0 = 0); force transmitted to the ground
|(k1 + i w c1) X1| [N]; peak kinetic energy w^2 / 2 sum m_i |X_i|^2 [uJ]; static deflection of
m3 under the preload [um]. All of them vanish with F0, so samples with a small force have
near-zero targets: the per-sample relative error is ill-conditioned on this data, which is the
point. Output standard deviations span about 0.5 to 700 (printed).

The file holds ``y`` (n, 15), ``c`` (n, 10), the input and output names and a stored
50/25/25 split (seeded), so every method of the benchmark sees the same split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

INPUTS = ("m1", "m2", "m3", "k1", "k2", "k3", "c1", "c2", "c3", "F0", "w", "gap", "kc", "a",
          "p")
BOUNDS = np.array([[1, 5], [1, 5], [1, 5], [20, 200], [20, 200], [20, 200], [20, 200],
                   [20, 200], [20, 200], [-60, 60], [1, 12], [0.0, 0.1], [50, 500], [0, 1],
                   [0, 0.5]], dtype=float)
OUTPUTS = ("re_x1_mm", "re_x2_mm", "im_x3_um", "abs_x3_um", "spring_force_N",
           "contact_force_N", "power_mW", "ground_force_N", "kinetic_energy_uJ",
           "static_um")


def simulate(y: np.ndarray) -> np.ndarray:
    """Outputs (n, 10) of the oscillator chain for inputs (n, 15) (see the module docstring)."""
    m1, m2, m3, k1, k2, k3, c1, c2, c3, F0, w, gap, kc, a, p = y.T
    k1, k2, k3, kc = 1e3 * k1, 1e3 * k2, 1e3 * k3, 1e3 * kc        # N/m
    n = y.shape[0]
    K = np.zeros((n, 3, 3))
    C = np.zeros((n, 3, 3))
    for mat, (s1, s2, s3) in ((K, (k1, k2, k3)), (C, (c1, c2, c3))):
        mat[:, 0, 0] = s1 + s2
        mat[:, 0, 1] = mat[:, 1, 0] = -s2
        mat[:, 1, 1] = s2 + s3
        mat[:, 1, 2] = mat[:, 2, 1] = -s3
        mat[:, 2, 2] = s3
    M = np.zeros((n, 3, 3))
    M[:, 0, 0], M[:, 1, 1], M[:, 2, 2] = m1, m2, m3
    A = K - (w**2)[:, None, None] * M + 1j * w[:, None, None] * C
    F = np.stack([F0 * (1 - a), np.zeros(n), F0 * a], axis=1).astype(complex)
    X = np.linalg.solve(A, F[..., None])[..., 0]                    # (n, 3) metres
    rel = X - np.concatenate([np.zeros((n, 1)), X[:, :-1]], axis=1)
    amp3 = 1e3 * np.abs(X[:, 2])                                    # mm
    static = np.linalg.solve(K, np.stack([np.zeros(n), np.zeros(n), p * F0], axis=1)[..., None])
    cs = np.stack([c1, c2, c3], axis=1)
    ms = np.stack([m1, m2, m3], axis=1)
    return np.column_stack([
        1e3 * X[:, 0].real, 1e3 * X[:, 1].real, 1e6 * X[:, 2].imag, 1e3 * amp3,
        k1 * X[:, 0].real,
        kc * 1e-3 * np.maximum(0.0, amp3 - gap),
        1e3 * 0.5 * w**2 * (cs * np.abs(rel) ** 2).sum(axis=1),
        np.abs((k1 + 1j * w * c1) * X[:, 0]),
        1e6 * 0.5 * w**2 * (ms * np.abs(X) ** 2).sum(axis=1),
        1e6 * static[:, 2, 0],
    ])


def make(n: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs, outputs and a stored 50/25/25 split of ``n`` samples (seeded)."""
    rng = np.random.default_rng(seed)
    y = BOUNDS[:, 0] + (BOUNDS[:, 1] - BOUNDS[:, 0]) * rng.random((n, len(INPUTS)))
    c = simulate(y)
    split = np.empty(n, dtype="<U10")
    order = rng.permutation(n)
    n_train, n_val = n // 2, n // 4
    split[order[:n_train]] = "train"
    split[order[n_train:n_train + n_val]] = "validation"
    split[order[n_train + n_val:]] = "test"
    return {"y": y, "c": c, "split": split, "parameter_names": np.array(INPUTS),
            "observable_names": np.array(OUTPUTS)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-output/oscillator.npz")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = make(args.n, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, y=data["y"], c=data["c"], split=data["split"])
    c = data["c"][data["split"] == "train"]
    print(f"{out}: {args.n} samples, {len(INPUTS)} -> {len(OUTPUTS)}, split 50/25/25 (seed "
          f"{args.seed})")
    std = c.std(axis=0)
    for name, s, z in zip(OUTPUTS, std, (c == 0).mean(axis=0), strict=True):
        print(f"  {name:<18} std {s:10.4g}   exact zeros {100 * z:5.1f} %")
    norms = np.linalg.norm(c, axis=1)
    print(f"  per-sample ||c||: min / median = {norms.min() / np.median(norms):.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
