"""serve-surrogate under hostile clients (issue 20): peak memory and request latency.

Starts ``serve-surrogate`` on 127.0.0.1 (a port the system picks) for a model directory and
runs, one after the other, bounded attacks against it while a probe thread sends one
``/Evaluate`` request after the other and records its latency:

``big body``     one POST of ``--big-mb`` MB (default 60) of JSON (small lists of numbers)
``half-open``    50 connections that send half of their request headers and then wait
``slow body``    50 connections that send their headers and half of the body, then wait
``dropped``      200 clients that send half of a body and close the connection
``malformed``    400-digit integers, a 5000-digit inWrt, nesting 100,000 deep, a list as
                 model name, a Gradient with sens = 1e308 (each answered? which type?)
``concurrent``   300 ApplyJacobian requests from 8 client threads against ``--max-workers
                 4`` (compared with the model's own values; the figures count wrong answers
                 and errors)

Printed: per attack the server's peak resident memory (sampled every 20 ms; VmHWM at the
end), the probe's median and maximum latency, how long the server held the attacking
connections, and the number of lines the server wrote to stderr. Everything talks to
127.0.0.1 only and every wait is bounded (the whole run takes about a minute).

    python bench/bench_serve_dos.py MODEL_DIR [--big-mb 60] [--max-workers 4]

``MODEL_DIR`` defaults to a tiny float32 DCR-shaped model (3 -> 882) written to a temporary
folder (random weights: the numbers checked are the model's own). Use ``PYTHONPATH`` to
measure another tree (e.g. the code before issue 20).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"


def tiny_model(folder: Path, dtype: str = "float32") -> Path:
    """A random separable model 3 -> 882 with a DCR-like box (float32: the torch path)."""
    import torch

    from surrogate import NeuralODE, Normalizer, SeparableModel, save_surrogate

    g = torch.Generator().manual_seed(0)
    dt = torch.float32 if dtype == "float32" else torch.float64
    norm = Normalizer(3, 882, center_targets=True).fit(
        torch.rand(40, 3, dtype=torch.float64, generator=g),
        1 + torch.rand(40, 882, dtype=torch.float64, generator=g))
    model = SeparableModel(NeuralODE(3, 16, 4, generator=g, dtype=dt), 882, norm)
    with torch.no_grad():
        model.W.normal_(generator=g)
    box = {"names": ["a", "b", "c"], "lower": [0.0, 0.0, 0.0], "upper": [1.0, 1.0, 1.0],
           "box": "bench"}
    save_surrogate(model, folder, {"method": "bench"},
                   extra={"inputs": box, "outputs": {"names": None, "coords": {}}})
    return folder


class Server:
    """serve-surrogate in a subprocess; stderr collected in a file."""

    def __init__(self, model: Path, max_workers: int, stderr: Path) -> None:
        self.err_path = stderr
        self._err = stderr.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "surrogate.serving", str(model), "--port", "0",
             "--host", HOST, "--max-workers", str(max_workers)],
            stdout=subprocess.PIPE, stderr=self._err, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "serving" not in line:
            self.stop()
            raise SystemExit(f"server did not start: {line!r} {stderr.read_text()}")
        self.port = int(line.rsplit(":", 1)[1].split()[0])

    def status(self, key: str) -> int:
        """VmRSS / VmHWM of the server in bytes."""
        for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if row.startswith(key + ":"):
                return int(row.split()[1]) * 1024
        return 0

    def stderr_lines(self) -> list[str]:
        self._err.flush()
        return self.err_path.read_text().splitlines()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def post(port: int, path: str, body: bytes | str, timeout: float = 60.0
         ) -> tuple[int, dict | str]:
    """One POST on a fresh connection; (status, JSON body or text); (0, reason) on failure."""
    import http.client

    data = body.encode() if isinstance(body, str) else body
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode(errors="replace")[:200]
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


class Probe:
    """A thread sending /Evaluate requests back to back and sampling the server's memory."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.failures = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._requests, daemon=True),
                         threading.Thread(target=self._memory, daemon=True)]

    def _requests(self) -> None:
        body = json.dumps({"name": "surrogate", "input": [[0.5, 0.5, 0.5]]})
        while not self._stop.is_set():
            t0 = time.perf_counter()
            status, _ = post(self.server.port, "/Evaluate", body, timeout=120)
            self.latencies.append(time.perf_counter() - t0)
            self.failures += status != 200
            time.sleep(0.02)

    def _memory(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, self.server.status("VmRSS"))
            except OSError:
                return
            time.sleep(0.02)

    def __enter__(self) -> Probe:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=130)


def held_seconds(socks: list[socket.socket], limit: float) -> list[float]:
    """Seconds until the server closed each socket (``limit`` if still open then)."""
    start = time.monotonic()
    closed: dict[int, float] = {}
    for s in socks:
        s.settimeout(0.05)
    while len(closed) < len(socks) and time.monotonic() - start < limit:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                data = s.recv(65536)
                if not data:
                    closed[i] = time.monotonic() - start
                else:  # a response (408): wait for the close that follows
                    continue
            except TimeoutError:
                continue
            except OSError:
                closed[i] = time.monotonic() - start
        time.sleep(0.05)
    for s in socks:
        s.close()
    return [closed.get(i, limit) for i in range(len(socks))]


def attack_big_body(port: int, megabytes: float, timeout: float = 300.0) -> str:
    """One POST whose valid JSON body is ``megabytes`` MB of small lists, streamed; the
    server's first answer line (waiting at most ``timeout`` seconds)."""
    head, unit, tail = b'{"name": "surrogate", "input": [', b"[0.5, 0.5, 0.5], ", b"[1.0]]}"
    units = int(megabytes * 1e6 - len(head) - len(tail)) // len(unit)
    size = len(head) + units * len(unit) + len(tail)
    block = 4096
    s = socket.create_connection((HOST, port), timeout=timeout)
    sent = 0
    try:
        s.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {size}\r\n\r\n".encode() + head)
        sent = len(head)
        for i in range(0, units, block):
            part = unit * min(block, units - i)
            s.sendall(part)
            sent += len(part)
        s.sendall(tail)
        answer = s.recv(4096).decode(errors="replace")
    except OSError as exc:
        answer = f"connection closed by the server after {sent / 1e6:.1f} MB ({exc.strerror})"
    s.close()
    return answer.splitlines()[0] if answer else "no answer"


def attack_half_open(port: int, n: int = 50, limit: float = 120.0) -> list[float]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=10)
        s.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    return held_seconds(socks, limit)


def attack_slow_body(port: int, n: int = 50, limit: float = 120.0) -> list[float]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=10)
        s.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"name\": \"surrogate\", ")
        socks.append(s)
    return held_seconds(socks, limit)


def attack_dropped(port: int, n: int = 200) -> None:
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=10)
        s.sendall(b"POST /Evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"[" * 5000)
        s.close()
    time.sleep(1.0)


MALFORMED = {
    "400-digit integer input": ("/Evaluate",
                                '{"name": "surrogate", "input": [[1' + "0" * 400 + ', 0.5, 0.5]]}'),
    "5000-digit inWrt": ("/Gradient", '{"name": "surrogate", "input": [[0.5, 0.5, 0.5]], '
                         '"outWrt": 0, "inWrt": 1' + "0" * 5000 + ', "sens": [1.0]}'),
    "nesting 100,000 deep": ("/Evaluate", "[" * 100_000 + "]" * 100_000),
    "nesting 50,000 deep": ("/Evaluate", '{"name": ' + "[" * 50_000 + "]" * 50_000 + "}"),
    "list as model name": ("/Evaluate", '{"name": ["surrogate"], "input": [[0.5, 0.5, 0.5]]}'),
    "Gradient with sens 1e308": ("/Gradient", json.dumps(
        {"name": "surrogate", "input": [[0.5, 0.5, 0.5]], "outWrt": 0, "inWrt": 0,
         "sens": [1e308] * 882})),
}


def attack_malformed(port: int) -> dict[str, str]:
    out = {}
    for name, (path, body) in MALFORMED.items():
        status, answer = post(port, path, body)
        kind = answer.get("error", {}).get("type") if isinstance(answer, dict) else None
        out[name] = f"{status} {kind or repr(answer)[:60]}"
    return out


def attack_concurrent(port: int, model_dir: Path, n: int = 300) -> dict[str, int]:
    import surrogate

    m = surrogate.load(model_dir)
    rng = np.random.default_rng(0)
    ys = rng.random((n, 3))
    vs = rng.normal(size=(n, 3))
    expect = [m.jvp(y, v) for y, v in zip(ys, vs, strict=True)]

    def one(i: int) -> tuple[int, bool]:
        status, ans = post(port, "/ApplyJacobian", json.dumps(
            {"name": "surrogate", "input": [ys[i].tolist()], "outWrt": 0, "inWrt": 0,
             "vec": vs[i].tolist()}))
        ok = status == 200 and isinstance(ans, dict) and np.allclose(
            ans["output"], expect[i], rtol=1e-6, atol=1e-9 * np.abs(expect[i]).max())
        return status, ok

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(n)))
    return {"requests": n, "200 right": sum(ok for _, ok in results),
            "200 wrong": sum(s == 200 and not ok for s, ok in results),
            "errors": sum(s != 200 for s, _ in results)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", type=Path, help="model directory (default: a tiny "
                   "float32 model)")
    p.add_argument("--big-mb", type=float, default=60.0)
    p.add_argument("--max-workers", type=int, default=4)
    p.add_argument("--hold-limit", type=float, default=120.0,
                   help="stop waiting for the server to close attacking connections after "
                   "this many seconds")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dos-"))
    model = args.model or tiny_model(tmp / "model")
    server = Server(model, args.max_workers, tmp / "stderr.txt")
    rows = []
    try:
        base = server.status("VmRSS")
        print(f"server pid {server.proc.pid} on {HOST}:{server.port}, resident memory at start "
              f"{base / 2**20:.0f} MiB; machine load {os.getloadavg()[0]:.1f}")
        cases = [
            ("big body", lambda: attack_big_body(server.port, args.big_mb)),
            ("half-open x50", lambda: attack_half_open(server.port, limit=args.hold_limit)),
            ("slow body x50", lambda: attack_slow_body(server.port, limit=args.hold_limit)),
            ("dropped x200", lambda: attack_dropped(server.port)),
            ("malformed", lambda: attack_malformed(server.port)),
            ("concurrent ApplyJacobian", lambda: attack_concurrent(server.port, model)),
        ]
        for name, attack in cases:
            lines0 = len(server.stderr_lines())
            t0 = time.perf_counter()
            with Probe(server) as probe:
                result = attack()
                time.sleep(0.3)
            wall = time.perf_counter() - t0
            lat = probe.latencies or [float("nan")]
            if isinstance(result, list):
                result = f"held {statistics.median(result):.1f} s median, {max(result):.1f} s max"
            rows.append((name, probe.peak_rss, statistics.median(lat), max(lat),
                         probe.failures, len(server.stderr_lines()) - lines0, wall, result))
        hwm = server.status("VmHWM")
        log = server.stderr_lines()
    finally:
        server.stop()
    print(f"{'attack':<25} {'peak RSS':>9} {'probe median':>12} {'probe max':>9} "
          f"{'probe fails':>11} {'log lines':>9} {'wall':>6}  result")
    for name, rss, med, mx, fails, lines, wall, result in rows:
        print(f"{name:<25} {rss / 2**20:>5.0f} MiB {med * 1e3:>9.1f} ms {mx * 1e3:>6.0f} ms "
              f"{fails:>11} {lines:>9} {wall:>5.1f}s  {result}")
    print(f"server peak resident memory over the whole run (VmHWM): {hwm / 2**20:.0f} MiB")
    tracebacks = sum("Traceback" in line for line in log)
    kinds = sorted({re.sub(r"\d+", "N", line)[:100] for line in log})
    print(f"server stderr: {len(log)} lines, {tracebacks} tracebacks; {len(kinds)} kinds:")
    for k in kinds[:8]:
        print(f"  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
