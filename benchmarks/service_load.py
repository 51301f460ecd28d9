"""Load on ``POST /v1/plans``: throughput, p50 and p99 for a 200-layer, 6-option, single-budget problem.

Starts ``mpq serve`` on a free loopback port with a fresh SQLite file, warms it up, then sends a
bounded number of requests from a few client threads and prints what it measured, with the
server's own breakdown of each request (``Server-Timing``: validate, solve, encode, store).
Requests cycle through ``--budgets`` budgets of one problem (clients re-plan one sensitivity set at
several sizes). The in-process rate is measured in the same run, before and after the load, on the
same bodies: parse with ``mpq.schema``, solve, write the plan JSON, in one thread. On a machine shared
with other work both rates drop; their ratio is the service's overhead.
Goals: at least 200 solves/s, p99 under 50 ms, at least 80% of the in-process rate, on
2 cores with the load client on them.

    python benchmarks/service_load.py [--requests 400] [--concurrency 4] [--max-seconds 60]
    python benchmarks/service_load.py --overhead   # a zero-cost solver: what the service itself costs
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent


def make_problem(n_layers: int = 200, seed: int = 0, budget: float = 4.0) -> dict:
    """Varied layer sizes and noisy distortions (all-convex instances are too easy for every solver)."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(n_layers):
        params = int(rng.choice([4096, 16384, 65536, 262144, 589824])) * int(rng.integers(1, 4))
        options = []
        for b in (2, 3, 4, 5, 6, 8):
            bits = params * b + 16 * (params // 128)
            options.append({"id": f"int{b}-g128", "w_bits": b, "group_size": 128, "bits": bits, "bytes": -(-bits // 8),
                            "distortion": float(params * 4.0 ** (-b) * rng.lognormal(0, 0.5) * 1e-6)})
        layers.append({"name": f"layers.{i}", "params": params, "options": options})
    return {"schema": "mpq.problem/v1", "layers": layers, "constraints": {"max_avg_bits": budget},
            "model": {"name": "bench", "fingerprint": "sha256:bench"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: str, workers: int | None, plugins: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; from mpq.cli import main; sys.exit(main())", "serve",
           "--host", "127.0.0.1", "--port", str(port), "--db", db, "--log-level", "warning"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    for plugin in plugins:
        cmd += ["--plugin", plugin]
    env = {k: v for k, v in os.environ.items() if k != "MPQ_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of the server process and of its children, from /proc (Linux only)."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(p: int) -> tuple[int, float]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick

    try:
        out = {"server": stat(pid)[1], "workers": 0.0}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid, cpu = stat(int(entry.name))
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == pid:
                    out["workers"] += cpu
        return out
    except OSError:
        return {}


def parse_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def in_process_rate(bodies: list[bytes], solver: str, seconds: float) -> tuple[float, float]:
    """Solves per second in this process, one thread (what a library user gets for the same bodies),
    and the CPU milliseconds each took."""
    from mpq.schema import Problem
    from mpq.solvers import get_solver

    problems = [json.loads(b)["problem"] for b in bodies]
    texts = [json.dumps(p).encode() for p in problems]
    get_solver(solver).solve(Problem.model_validate_json(texts[0]))  # imports and first calls
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        plan = get_solver(solver).solve(Problem.model_validate_json(texts[n % len(texts)]))
        plan.model_dump_json(by_alias=True)
        n += 1
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400, help="requests to time (after warm-up)")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="stop sending after this long")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument("--solver", default="auto")
    ap.add_argument("--budgets", type=int, default=16, help="distinct budgets the requests cycle through")
    ap.add_argument("--inproc-seconds", type=float, default=3.0, help="how long to measure the in-process rate, before and after")
    ap.add_argument("--workers", type=int, default=None, help="server solver processes (default: CPU count)")
    ap.add_argument("--overhead", action="store_true",
                    help="use a solver that costs nothing (benchmarks/overhead_solver.py): the service's own cost")
    args = ap.parse_args()
    if args.overhead:
        args.solver = "smallest-option"

    bodies = [json.dumps({"problem": make_problem(args.layers, budget=b), "solver": args.solver,
                          "options": {"time_limit_s": 60}}).encode() for b in np.linspace(3.5, 4.5, args.budgets)]
    body = bodies[0]
    inproc = [in_process_rate(bodies, args.solver, args.inproc_seconds)]
    print(f"problem: {args.layers} layers x 6 options, max_avg_bits 3.5..4.5 in {args.budgets} steps; request body {len(body) / 1024:.0f} KiB; "
          f"{os.cpu_count()} CPUs; solver {args.solver}")
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(f"sqlite:///{Path(tmp) / 'bench.db'}", args.workers, ["overhead_solver"] if args.overhead else [])
        try:
            headers = {"content-type": "application/json"}
            with httpx.Client(base_url=url, timeout=120) as http:
                for _ in range(args.warmup):
                    r = http.post("/v1/plans", content=body, headers=headers)
                    if r.status_code != 201:
                        raise SystemExit(f"warm-up failed: {r.status_code} {r.text[:500]}")
            latencies: list[float] = []
            timings: dict[str, list[float]] = defaultdict(list)
            errors: list[str] = []
            lock = threading.Lock()
            remaining = [args.requests]
            stop_at = time.monotonic() + args.max_seconds

            def worker() -> None:
                with httpx.Client(base_url=url, timeout=120) as http:
                    while True:
                        with lock:
                            if remaining[0] <= 0 or time.monotonic() > stop_at:
                                return
                            remaining[0] -= 1
                            body = bodies[remaining[0] % len(bodies)]
                        t0 = time.perf_counter()
                        r = http.post("/v1/plans", content=body, headers=headers)
                        dt = time.perf_counter() - t0
                        with lock:
                            if r.status_code != 201:
                                errors.append(f"{r.status_code} {r.text[:200]}")
                                continue
                            latencies.append(dt)
                            for k, v in parse_timing(r.headers.get("server-timing", "")).items():
                                timings[k].append(v)

            cpu0 = cpu_seconds(proc.pid)
            client0 = time.process_time()
            t0 = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            client_cpu = time.process_time() - client0
            cpu1 = cpu_seconds(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    inproc.append(in_process_rate(bodies, args.solver, args.inproc_seconds))
    if not latencies:
        raise SystemExit(f"no request succeeded: {errors[:3]}")
    ms = sorted(x * 1000 for x in latencies)
    p = lambda q: float(np.percentile(ms, q))  # noqa: E731
    rate, local = len(ms) / wall, statistics.mean(r for r, _ in inproc)
    print(f"requests: {len(ms)} ok, {len(errors)} failed, {args.concurrency} client threads, {wall:.1f} s, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"throughput: {rate:.1f} solves/s   (goal >= 200) ... {'MET' if rate >= 200 else 'MISSED'}")
    print(f"latency ms: p50 {p(50):.1f}  p90 {p(90):.1f}  p99 {p(99):.1f}  max {ms[-1]:.1f}   (goal p99 < 50) ... "
          f"{'MET' if p(99) < 50 else 'MISSED'}")
    print(f"in-process rate (parse, solve, write the plan; one thread), same run: {inproc[0][0]:.1f} before, {inproc[1][0]:.1f} after; "
          f"service / in process = {rate / local:.2f}   (goal >= 0.80) ... {'MET' if rate >= 0.8 * local else 'MISSED'}")
    if timings:
        parts = "  ".join(f"{k} {statistics.mean(v):.1f}" for k, v in timings.items())
        server = sum(statistics.mean(v) for v in timings.values())
        print(f"server time per request, mean ms: {parts}  (sum {server:.1f}; the rest of the latency is HTTP, "
              "queueing and transfer)")
    if cpu0 and cpu1:
        per = {k: (cpu1[k] - cpu0[k]) / len(ms) * 1000 for k in cpu0}
        print(f"CPU per request, ms: server process (HTTP, JSON, database) {per['server']:.1f}, "
              f"solver processes (validate, solve, encode) {per['workers']:.1f}, load client {client_cpu / len(ms) * 1000:.1f}")
        cpu_local = statistics.mean(c for _, c in inproc)
        service_cpu = per["server"] + per["workers"]
        print(f"CPU per solve in process {cpu_local:.1f} ms; per request in the service {service_cpu:.1f} ms "
              f"(= {cpu_local / service_cpu:.2f} of the in-process rate per CPU second; on a loaded machine wall-clock rates "
              f"follow each process's share of the cores, this ratio does not)")
    for e in errors[:3]:
        print("error:", e)


if __name__ == "__main__":
    main()
