"""Where the time of a GNvpro training goes (issue 18): cProfile of ``train-surrogate``.

    python bench/bench_gnvpro_profile.py --data /work/data/dcr10k.h5 \
        --set gnvpro.output_basis_tol=0 --budgets 100,60,40
    python bench/bench_gnvpro_profile.py --data /work/data/dcr10k.h5 --budgets 100,60,40

Trains GNvpro (default preset, torch on ``--threads`` threads) with the given work units per
level and the ``--set section.key=value`` overrides, under cProfile, and prints the wall and
CPU seconds, the seconds per work unit and the functions with the largest own time (which
shows the split between the network's passes, the VarPro linear algebra and the monitoring).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from solvers.common.toml import parse_assignments  # noqa: E402
from solvers.errors import ConfigError  # noqa: E402
from train.run import RunOptions, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--budgets", default="100,60,40", help="work units per level")
    p.add_argument("--set", action="append", default=[], help="section.key=value override")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    user: dict = {}
    for item in args.set:                 # section.key=value
        section, _, rest = item.partition(".")
        for name, value in parse_assignments([rest], ConfigError).items():
            user.setdefault(section, {})[name] = value
    user.setdefault("gnvpro", {})["work_units_per_level"] = [
        float(b) for b in args.budgets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "train.toml"
        cfg.write_text(_toml(user))
        opts = RunOptions(data=args.data, methods=("gnvpro",), out=Path(tmp) / "model",
                          config=str(cfg))
        prof = cProfile.Profile()
        t0, c0 = time.perf_counter(), time.process_time()
        prof.enable()
        summaries = run(opts)
        prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = summaries[0]
    print(f"wall {wall:.1f} s, cpu {cpu:.1f} s (training: wall {s['wall_time']:.1f} s, cpu "
          f"{s['cpu_time']:.1f} s, {s['work_units']:.0f} WU, "
          f"{1e3 * s['cpu_time'] / s['work_units']:.1f} ms cpu per WU); test "
          f"{s['errors']['test']['mean']:.4f}")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
    print(buf.getvalue())
    return 0


def _toml(user: dict) -> str:
    """A nested {section: {key: value}} as TOML (numbers, strings, booleans, flat lists)."""
    def val(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)
    return "".join(f"[{sec}]\n" + "".join(f"{k} = {val(v)}\n" for k, v in keys.items())
                   for sec, keys in user.items())


if __name__ == "__main__":
    sys.exit(main())
