"""The main job end to end: dataset (MPI) -> GNvpro surrogate -> check against fresh PDE solves.

Runs the project's real commands as subprocesses, times each stage and prints one result table
(relative errors on train/validation/test and on fresh solves, PDE seconds per solve against
surrogate seconds per evaluation, wall time of each stage) with the paths of the figures and
the report::

    python examples/demo_pipeline.py [--out demo-output] [--problem cdr] [--samples 400]
        [--ranks R] [--eval-samples 100] [--set KEY=VALUE ...] [--train-config train.toml]

The stages are

1. ``mpiexec -n R generate-dataset PROBLEM --samples N --seed S --out OUT/PROBLEM.h5``
2. ``train-surrogate --data OUT/PROBLEM.h5 --method gnvpro --seed 0 --out OUT/PROBLEM-gnvpro``
3. ``mpiexec -n R evaluate-surrogate OUT/PROBLEM-gnvpro --samples E --seed S+1
   --out OUT/evaluation`` (writes ``report.json``, see issue 9 / contract 2)

Rerunning the same command reuses the stages that finished (recorded in
``OUT/stages.json`` with their command and wall time) and resumes an interrupted one: the
dataset and the evaluation's fresh solves resume inside the tools, training continues from
its last finished level (``--resume``). A stage reruns when its command changed or a stage it
depends on ran again. ``make demo`` runs this script with the defaults below.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

PROG = "demo_pipeline"
#: dataset sizes of the GNvpro paper (SPEC 3)
PAPER_SAMPLES = {"cdr": 800, "dcr": 10000}
#: demo defaults: about 10 minutes on 2 cores at paper resolution (CDR: 2.4 s per sample and
#: core, 0.76 samples/s on 2 ranks -> 400 samples ~ 8 min, 100 fresh solves ~ 2 min,
#: GNvpro training on 200 samples ~ 10 s, start-up of the three stages ~ 0.5 min; measured:
#: 200 samples 6.1 min in all, 400 samples see README)
DEFAULT_SAMPLES = {"cdr": 400, "dcr": 1000}
DEFAULT_EVAL_SAMPLES = {"cdr": 100, "dcr": 200}
STAGES = ("dataset", "train", "evaluate")
#: the command of each stage, its label in the table
STAGE_TOOL = {"dataset": "generate-dataset", "train": "train-surrogate",
              "evaluate": "evaluate-surrogate"}
SPLITS = ("train", "validation", "test")


class DemoError(Exception):
    """A failure reported as ``demo_pipeline: error: ...``."""


def local_cores() -> int:
    """Cores this process may run on (the affinity mask, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tool(name: str) -> str:
    """Path of a console script or mpiexec next to this interpreter (the project's venv),
    else the name for a PATH lookup."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Generate a dataset with MPI, train a GNvpro surrogate, "
        "evaluate it against fresh PDE solves and print one result table (resumable).")
    p.add_argument("--out", type=Path, default=Path("demo-output"),
                   help="output folder (default demo-output)")
    p.add_argument("--problem", choices=sorted(PAPER_SAMPLES), default="cdr",
                   help="PDE problem (default cdr)")
    p.add_argument("--samples", type=int, help="dataset samples (default "
                   + ", ".join(f"{k} {v}" for k, v in DEFAULT_SAMPLES.items())
                   + "; the paper: " + ", ".join(f"{k} {v}" for k, v in PAPER_SAMPLES.items())
                   + ")")
    p.add_argument("--ranks", type=int, default=local_cores(),
                   help=f"MPI ranks for the PDE solves (default: all local cores, "
                   f"{local_cores()})")
    p.add_argument("--eval-samples", type=int, help="fresh PDE solves for the evaluation "
                   "(default " + ", ".join(f"{k} {v}" for k, v in DEFAULT_EVAL_SAMPLES.items())
                   + ")")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--eval-seed", type=int,
                   help="seed of the fresh parameters (default: dataset seed + 1)")
    p.add_argument("--set", dest="assign", action="append", default=[], metavar="KEY=VALUE",
                   help="solver setting for generate-dataset (TOML literal, repeatable); the "
                   "evaluation re-solves with the dataset's settings")
    p.add_argument("--train-config", type=Path, metavar="FILE",
                   help="TOML file for train-surrogate --config")
    p.add_argument("--device", default="cpu", help="train-surrogate --device (default cpu)")
    p.add_argument("--stop-after", choices=STAGES, default="evaluate",
                   help="run the stages up to this one (default: all three)")
    p.add_argument("--quiet", action="store_true",
                   help="send the tools' output to OUT/logs/<stage>.log instead of the "
                   "terminal (no progress bars)")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill defaults and reject bad values with ``demo_pipeline: error: ...`` (status 2)."""
    if args.samples is None:
        args.samples = DEFAULT_SAMPLES[args.problem]
    if args.eval_samples is None:
        args.eval_samples = DEFAULT_EVAL_SAMPLES[args.problem]
    if args.eval_seed is None:
        args.eval_seed = args.seed + 1
    if args.samples < 4:
        p.error(f"--samples {args.samples}: at least 4 are needed for the three splits")
    if args.eval_samples < 1:
        p.error(f"--eval-samples {args.eval_samples}: must be at least 1")
    if args.ranks < 1:
        p.error(f"--ranks {args.ranks}: must be at least 1")
    if args.eval_seed == args.seed:
        p.error(f"--eval-seed {args.eval_seed}: equals the dataset seed, so the 'fresh' "
                "samples would be the training samples")
    for item in args.assign:
        if "=" not in item:
            p.error(f"--set {item!r}: expected KEY=VALUE")
    if args.train_config is not None and not args.train_config.is_file():
        p.error(f"--train-config {args.train_config}: no such file")


class Pipeline:
    """The three stages with their commands, outputs and the record of finished stages."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        out = args.out
        self.dataset = out / f"{args.problem}.h5"
        self.model = out / f"{args.problem}-gnvpro"
        self.report_dir = out / "evaluation"
        self.record_path = out / "stages.json"
        self.record: dict = {}
        if self.record_path.is_file():
            try:
                self.record = json.loads(self.record_path.read_text())
            except json.JSONDecodeError:
                self.record = {}
        self.wall: dict[str, float] = {}
        self.reused: dict[str, bool] = {}

    def commands(self) -> dict[str, list[str]]:
        a = self.args
        mpi = [tool("mpiexec"), "-n", str(a.ranks)]
        quiet = ["--no-progress"] if a.quiet else []
        gen = [*mpi, tool("generate-dataset"), a.problem, "--samples", str(a.samples),
               "--seed", str(a.seed), "--out", str(self.dataset), *quiet]
        for item in a.assign:
            gen += ["--set", item]
        train = [tool("train-surrogate"), "--data", str(self.dataset), "--method", "gnvpro",
                 "--seed", "0", "--device", a.device, "--out", str(self.model)]
        if a.train_config is not None:
            train += ["--config", str(a.train_config)]
        if a.quiet:
            train.append("--quiet")
        ev = [*mpi, tool("evaluate-surrogate"), str(self.model), "--samples",
              str(a.eval_samples), "--seed", str(a.eval_seed), "--out", str(self.report_dir),
              *quiet]
        return {"dataset": gen, "train": train, "evaluate": ev}

    def outputs_exist(self, stage: str) -> bool:
        return {"dataset": self.dataset.is_file(),
                "train": (self.model / "summary.json").is_file()
                and (self.model / "metadata.json").is_file(),
                "evaluate": (self.report_dir / "report.json").is_file()}[stage]

    @staticmethod
    def identity(command: list[str]) -> list[str]:
        """What decides a stage's result: the command without the ``mpiexec -n R`` prefix
        (results do not depend on the rank count) and without output-only options."""
        if Path(command[0]).name == "mpiexec":
            command = command[3:]
        return [c for c in command if c not in ("--no-progress", "--quiet")]

    def is_done(self, stage: str, command: list[str], upstream: str | None) -> bool:
        rec = self.record.get(stage)
        if rec is None or rec.get("identity") != self.identity(command) \
                or not self.outputs_exist(stage):
            return False
        if upstream is not None:
            return rec.get("upstream_finished") == self.record.get(upstream, {}).get("finished")
        return True

    def save_record(self) -> None:
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.record, indent=2) + "\n")
        os.replace(tmp, self.record_path)

    def run_stage(self, stage: str, command: list[str], upstream: str | None) -> None:
        if self.is_done(stage, command, upstream):
            self.wall[stage] = float(self.record[stage]["wall_s"])
            self.reused[stage] = True
            print(f"[{stage}] finished in an earlier run ({self.wall[stage]:.1f} s): reused",
                  flush=True)
            return
        run = list(command)
        if stage == "train" and (self.model / "checkpoint" / "state.json").is_file():
            run.append("--resume")          # an interrupted training continues its levels
        print(f"[{stage}] {' '.join(run)}", flush=True)
        log = None
        if self.args.quiet:
            (self.args.out / "logs").mkdir(parents=True, exist_ok=True)
            log = open(self.args.out / "logs" / f"{stage}.log", "w")
        t0 = time.perf_counter()
        try:
            returncode = run_until_done(run, log)
        except FileNotFoundError as exc:
            raise DemoError(f"stage {stage}: cannot start {run[0]!r} ({exc.strerror}); is the "
                            "project installed (make venv)?") from None
        finally:
            if log is not None:
                log.close()
        elapsed = time.perf_counter() - t0
        if returncode != 0:
            where = f"see {self.args.out / 'logs' / (stage + '.log')}" if log else "see above"
            if returncode == 2:
                raise DemoError(f"stage {stage} refused its input (exit status 2; {where}): "
                                "change the options or choose another --out")
            raise DemoError(f"stage {stage} failed with exit status {returncode} ({where}); "
                            "run the same command again to resume")
        self.wall[stage] = elapsed
        self.reused[stage] = False
        self.record[stage] = {
            "command": command, "identity": self.identity(command), "wall_s": elapsed,
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds"),
            "upstream_finished": self.record.get(upstream, {}).get("finished") if upstream
            else None}
        self.save_record()
        print(f"[{stage}] done in {elapsed:.1f} s", flush=True)

    def run(self) -> None:
        cmds = self.commands()
        upstream = None
        for stage in STAGES:
            self.run_stage(stage, cmds[stage], upstream)
            upstream = stage
            if stage == self.args.stop_after:
                break


def run_until_done(command: list[str], log: TextIO | None) -> int:
    """Run ``command`` to its end and return its exit status.

    Ctrl-C reaches the tool too (same process group) and SIGTERM to this script is passed on
    to it; either way the tool is given time to save its work (generate-dataset writes every
    finished sample) before :class:`KeyboardInterrupt` is raised here, instead of being
    killed at once as :func:`subprocess.run` would.
    """
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT if log else None)

    def forward(signum: int, frame: object) -> None:
        proc.send_signal(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            proc.wait(timeout=120)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DemoError(f"cannot read {path}: {exc}") from None


def _num(x: float | None, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def result_table(pipe: Pipeline) -> str:
    """The result table from ``summary.json`` (training) and ``report.json`` (evaluation)."""
    a = pipe.args
    summary = _read_json(pipe.model / "summary.json")
    report = _read_json(pipe.report_dir / "report.json") if a.stop_after == "evaluate" else None
    paper = PAPER_SAMPLES[a.problem]
    lines = [f"varpro-surrogates demo: {a.problem.upper()}, GNvpro surrogate, "
             f"{a.samples} samples on {a.ranks} MPI rank(s)"]
    if a.samples < paper:
        lines.append(f"NOTE: {a.samples} samples, fewer than the paper's {paper} "
                     f"(pass --samples {paper} for the paper size), so the errors are not "
                     "those of the paper's table 2")
    if a.assign:
        lines.append("solver settings changed from SPEC: " + ", ".join(a.assign))
    lines += ["", "relative error ||c_pred - c|| / ||c - c_shift|| per sample",
              f"  {'set':<24} {'mean':>10} {'std':>10} {'median':>10} {'p95':>10} "
              f"{'max':>10} {'n':>6}"]
    splits = (report or {}).get("splits") or summary["errors"]
    for s in SPLITS:
        e = splits.get(s)
        if e is not None:
            lines.append(f"  {s:<24} {_num(e['mean']):>10} {_num(e['std']):>10} {'-':>10} "
                         f"{'-':>10} {'-':>10} {e['n']:>6d}")
    if report is not None:
        f = report["fresh"]
        lines.append(f"  {'fresh PDE solves':<24} {_num(f['mean']):>10} {_num(f['std']):>10} "
                     f"{_num(f['median']):>10} {_num(f['p95']):>10} {_num(f['max']):>10} "
                     f"{report['n_fresh']:>6d}")
        if report.get("n_failed"):
            lines.append(f"  ({report['n_failed']} fresh solve(s) failed and are not counted)")
        c = report["cost"]
        lines += ["", "cost per evaluation [s]",
                  f"  {'PDE solve (median)':<34} {_num(c['pde_seconds_per_solve']):>10}",
                  f"  {'surrogate, single sample':<34} {_num(c['surrogate_seconds_single']):>10}"
                  f"   speed-up {_num(c['speedup_single'], '.3g')}x",
                  f"  {'surrogate, batched, per sample':<34} "
                  f"{_num(c['surrogate_seconds_per_sample_batched']):>10}"
                  f"   speed-up {_num(c['speedup_batched'], '.3g')}x"]
    lines += ["", "wall time per stage [s]"]
    for stage in STAGES:
        if stage in pipe.wall:
            note = "  (reused from an earlier run)" if pipe.reused[stage] else ""
            lines.append(f"  {STAGE_TOOL[stage]:<34} {pipe.wall[stage]:>10.1f}{note}")
    lines.append(f"  {'total':<34} {sum(pipe.wall.values()):>10.1f}")
    lines += ["", "outputs",
              f"  dataset   {pipe.dataset}",
              f"  model     {pipe.model}/ (summary.txt, history.csv)",
              f"  figure    {pipe.model / 'convergence.png'}"]
    if report is not None:
        lines.append(f"  report    {pipe.report_dir / 'report.json'}, "
                     f"{pipe.report_dir / 'report.md'}")
        for name, rel in sorted(report.get("figures", {}).items()):
            lines.append(f"  figure    {pipe.report_dir / rel}  ({name})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    pipe = Pipeline(args)
    if args.samples < PAPER_SAMPLES[args.problem]:
        print(f"{PROG}: {args.samples} samples (the paper uses {PAPER_SAMPLES[args.problem]})",
              flush=True)
    try:
        pipe.run()
        text = result_table(pipe)
    except DemoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print("\n" + text, end="", flush=True)
    table_file = args.out / "demo_table.txt"
    table_file.write_text(text)
    print(f"(this table is also in {table_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
