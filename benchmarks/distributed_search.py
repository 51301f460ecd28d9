"""Distributed search throughput: trials per minute with the measured objective, 1 and 2 workers, one PostgreSQL study.

The digits model (``mpq.examples.digits:workload``), a problem from its sensitivity table (the Hessian
estimator when available, else ``weight-error``), budget 4 average bits. Each trial applies its plan
to the model and measures the calibration loss. Throughput counts the trials completed between the
moment every worker has started its first trial and the last trial's end (process start-up excluded).
A plan already measured anywhere in the study is not measured again, so repeats are cheap trials.
Also printed: the hypervolume of the feasible front (measured loss against bytes) after k trials, and
the measured loss of the exact additive optimum against the best plan the search found.

The digits evaluation costs milliseconds, so there Optuna's per-trial round trips to the database
(and the CPU shared by workers, PostgreSQL and anything else on the machine) set the pace. A second
run adds a fixed wait per evaluation (``--device-ms``) standing for the accelerator time of a real
model, during which the worker's CPU is idle: that is the regime distributed workers are for.
Workers run one torch thread each (OMP_NUM_THREADS=1), one per core.

PostgreSQL: MPQ_TEST_POSTGRES_URL if set, else a throw-away server started with .ci/postgres.

    .venv/bin/python benchmarks/distributed_search.py [--trials 120] [--device-ms 300 --device-trials 60] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mpq.examples.digits:workload"
DEVICE_MODEL = "distributed_search:digits_with_device_time"  # resolved from this directory (workers' cwd)
WORKER = [sys.executable, "-c", "import sys; from mpq.cli import main; sys.exit(main())", "worker"]


def digits_with_device_time():
    """The digits workload whose loss also waits MPQ_BENCH_DEVICE_MS per batch (a stand-in for accelerator time)."""
    from mpq.examples.digits import workload

    wl = workload()
    wait = float(os.environ.get("MPQ_BENCH_DEVICE_MS", "0")) / 1000 / len(wl.batches)
    loss_fn = wl.loss_fn

    def loss(out, target):
        time.sleep(wait)
        return loss_fn(out, target)

    wl.loss_fn = loss
    wl.name = DEVICE_MODEL
    return wl


def start_postgres() -> tuple[str, str | None]:
    url = os.environ.get("MPQ_TEST_POSTGRES_URL")
    if url:
        return url, None
    out = subprocess.run([str(ROOT / ".ci" / "postgres"), "start"], check=True, capture_output=True, text=True).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export "))
    return env["MPQ_TEST_POSTGRES_URL"], env["MPQ_POSTGRES_DATA"]


def build_problem():
    from mpq.cost import CandidateSet, build_problem
    from mpq.errors import UnknownName
    from mpq.graph import discover
    from mpq.pipeline import sensitivities
    from mpq.model_ref import load_workload

    wl = load_workload(MODEL)
    graph = discover(wl)
    try:
        table = sensitivities(wl, "hessian-trace", graph=graph, quiet=True)
    except UnknownName:
        table = sensitivities(wl, "weight-error", graph=graph)
    return wl, build_problem(graph, table, CandidateSet(), {"max_avg_bits": 4})


def run_study(url: str, problem, wl, workers: int, trials: int, device_ms: float = 0):
    from mpq.search import StudySearch
    from mpq.search.measured import measured_objective
    from mpq.solvers import get_solver

    name = f"bench-{workers}w-{uuid.uuid4().hex[:6]}"
    StudySearch(get_solver("evolutionary", trials=trials, seed=0, objective="measured",
                           evaluate_plan=measured_objective(wl),
                           should_stop=lambda: True), url, name, model=DEVICE_MODEL if device_ms else MODEL).search(problem)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPQ_BENCH_DEVICE_MS": str(device_ms)}
    procs = [subprocess.Popen(WORKER + ["--storage", url, "--study", name, "--quiet"], cwd=Path(__file__).parent, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(workers)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode:
            raise SystemExit(f"worker failed:\n{out}")
    return name


def trial_stats(url: str, name: str):
    """Complete trials (by completion time) and the rate window: from when every worker had started its first
    trial (workers start seconds apart while importing torch) to the last completion."""
    from mpq.search import join_study

    study, _ = join_study(url, name)
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"), key=lambda t: t.datetime_complete)
    first: dict[str, object] = {}
    for t in done:
        w = t.user_attrs["mpq"]["worker"]
        first[w] = min(first.get(w, t.datetime_start), t.datetime_start)
    start = max(first.values())
    in_window = [t for t in done if t.datetime_complete > start]
    span = (done[-1].datetime_complete - start).total_seconds()
    return done, in_window, span


def front_points(problem, trials):
    from mpq.solvers.compiled import compile_problem
    from mpq.solvers.evolutionary import SearchSpace

    cp = compile_problem(problem)
    space = SearchSpace(cp)
    out = []
    for t in trials:
        choice = space.choice(t.params)
        if choice is not None and cp.fits(choice):
            out.append((float(t.values[0]), float(t.values[1])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=120, help="complete trials per study (default 120)")
    ap.add_argument("--device-ms", type=float, default=300, help="accelerator time per evaluation in the second run (default 300; 0 skips it)")
    ap.add_argument("--repeats", type=int, default=2, help="repetitions of each measurement; the best is reported (default 2)")
    ap.add_argument("--device-trials", type=int, default=60, help="complete trials per study in the second run (default 60)")
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from mpq.solvers import get_solver
    from mpq.solvers.evolutionary import hypervolume
    from mpq.search.measured import measured_objective

    t0 = time.perf_counter()
    url, data = start_postgres()
    try:
        wl, problem = build_problem()
        print(f"digits CNN, {len(problem.layers)} layers x {len(problem.layers[0].options)} options, "
              f"estimator {problem.estimator}, budget max_avg_bits=4, measured objective = calibration loss")
        print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}\n")
        runs = [(0.0, args.trials)] + ([(args.device_ms, args.device_trials)] if args.device_ms else [])
        print(f"best of {args.repeats} interleaved repetitions (all rates in brackets); the machine is shared\n")
        print("trials/min counts every complete trial; infeasible candidates complete without being measured, so")
        print("measured/min counts only the feasible ones, whose plans were applied and evaluated.\n")
        print(f"{'device ms/eval':>14}  {'workers':>7}  {'trials (timed)':>14}  {'seconds':>8}  {'trials/min':>10}  {'measured/min':>12}  {'speed-up':>8}  all trials/min")
        for device_ms, trials in runs:
            reps: dict[int, list] = {1: [], 2: []}
            for _ in range(args.repeats):
                for workers in (1, 2):
                    name = run_study(url, problem, wl, workers, trials, device_ms)
                    done, window, span = trial_stats(url, name)
                    reps[workers].append((len(window) / span * 60, name, done, window, span))
            base = max(reps[1])[0]
            for workers, runs_here in reps.items():
                rate, name, done, window, span = max(runs_here, key=lambda r: r[0])
                measured = sum(1 for t in window if all(v <= 0 for v in t.user_attrs["mpq"]["violation"])) / span * 60
                print(f"{device_ms:>14.0f}  {workers:>7}  {len(done):>6} ({len(window):>5})  {span:>8.2f}  {rate:>10.0f}  {measured:>12.0f}  {rate / base:>7.2f}x  "
                      f"[{', '.join(f'{r[0]:.0f}' for r in runs_here)}]", flush=True)
            if device_ms == 0:
                results = {w: (r[0][1], r[0][2], r[0][4]) for w, r in reps.items()}
        fp = wl.calibration_loss()
        all_points = [p for _, done, _ in results.values() for p in front_points(problem, done)]
        # plans worse than twice the full-precision loss are of no use: they bound the reference box
        ref = (2 * fp, max(p[1] for p in all_points) * 1.05)
        box = ref[0] * ref[1]
        print(f"\nhypervolume of the feasible front (measured loss x bytes) after k complete trials, as a fraction of "
              f"the reference box {ref[0]:.4f} (twice the full-precision loss) x {ref[1]:.0f} bytes")
        ks = sorted({k for k in (5, 10, 25, 50, 75, 100, 150, 200, 300, 500) if k < args.trials} | {args.trials})
        print(f"{'trials':>7}  " + "  ".join(f"{w} worker{'s' if w > 1 else ' '}" for w in results))
        for k in ks:
            row = [hypervolume(front_points(problem, done[:k]), ref) / box for _, done, _ in results.values()]
            print(f"{k:>7}  " + "  ".join(f"{v:>9.4f}" for v in row))

        dp_plan = get_solver("dp").solve(problem)
        dp_loss = measured_objective(wl)(dp_plan)
        best = min(min(p for p in front_points(problem, done) if p[1] <= dp_plan.totals.bytes)[0] for _, done, _ in results.values())
        print(f"\ncalibration loss: full precision {fp:.4f}; exact additive optimum (dp, {dp_plan.totals.bytes} bytes) {dp_loss:.4f}; "
              f"best measured plan no larger {best:.4f}")
    finally:
        if data:
            subprocess.run([str(ROOT / ".ci" / "postgres"), "stop", data], check=False)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
