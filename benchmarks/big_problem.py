"""Big problems file to file: ``mpq solve problem.npz -o plan.npz`` at 1,000,000 groups, and the JSON path at 10,000.

Writes the ``layer`` instance family (``benchmarks/mckp_instances.py``, seed 1000 + N) as a columnar
problem, then alternates, ``--rounds`` times: reading its arrays with ``np.load`` (the floor any reader
pays), the whole command in a fresh process (load and validate, solve, write the columnar plan; wall time
and peak resident memory), and the same three steps in this process. The JSON path at 10,000 groups is
timed the same way against the in-process solve of the already parsed problem. Medians are printed.
mpq's modules are byte-compiled first, as ``pip install`` leaves them.
On a machine shared with other work a short process waits for a core much of its wall time, so every
contender is also measured in CPU seconds (user + system), and the goals are judged on those.

    python benchmarks/big_problem.py [--groups 1000000] [--json-groups 10000] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mckp_instances import problem_columns  # noqa: E402

MPQ = [sys.executable, "-c", "import sys; from mpq.cli import main; sys.exit(main())"]


class Timed:
    """Wall and CPU seconds of this process over a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def np_load(path: Path) -> Timed:
    with Timed() as t:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    del arrays
    return t


def command(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak resident memory (bytes) of ``mpq ARGS`` in a fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen(MPQ + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"mpq {' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024.0


def in_process(problem_path: Path, plan_path: Path) -> tuple[Timed, dict]:
    from mpq.problem_files import load_problem
    from mpq.plan_columns import save_plan
    from mpq.solvers import get_solver

    steps = {}
    with Timed() as total:
        with Timed() as t:
            problem = load_problem(problem_path, columns=True)  # as `mpq solve` reads it
        steps["load"] = t.cpu
        with Timed() as t:
            plan = get_solver("auto").solve_columns(problem)
        steps["solve"] = t.cpu
        with Timed() as t:
            save_plan(plan, plan_path)
        steps["write"] = t.cpu
    return total, steps


def byte_compile_mpq() -> None:
    """Byte-compile mpq's modules, as ``pip install`` does: a checkout run with PYTHONDONTWRITEBYTECODE
    would otherwise compile every module from source on each start of the command."""
    import compileall

    import mpq
    import mpq.sensitivity
    import mpq.solvers

    for package in (mpq, mpq.solvers, mpq.sensitivity):
        compileall.compile_dir(package.__path__[0], quiet=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=1_000_000)
    ap.add_argument("--json-groups", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", help="keep the files here (default: a temporary folder)")
    args = ap.parse_args()
    byte_compile_mpq()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        problem = folder / f"layer-{args.groups}.npz"
        if not problem.exists():
            problem_columns(args.groups, "layer", 1000 + args.groups).save(problem)
        size = problem.stat().st_size
        np_load(problem)  # the page cache holds the file from here on, for every contender alike
        loads, cli, inproc, steps = [], [], [], []
        for _ in range(args.rounds):
            loads.append(np_load(problem))
            cli.append(command(["solve", str(problem), "-o", str(folder / "plan.npz")]))
            t, s = in_process(problem, folder / "plan-inproc.npz")
            inproc.append(t)
            steps.append(s)
        med = statistics.median
        load_w, load_c = med(t.wall for t in loads), med(t.cpu for t in loads)
        cli_w, cli_c, mem = med(c[0] for c in cli), med(c[1] for c in cli), med(c[2] for c in cli)
        in_w, in_c = med(t.wall for t in inproc), med(t.cpu for t in inproc)
        parts = ", ".join(f"{k} {med(s[k] for s in steps):.2f}" for k in steps[0])
        print(f"{args.groups:,} groups x 6 options, columnar problem {size / 2**20:,.0f} MiB; medians of {args.rounds} rounds, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"  {'':44}{'wall s':>8} {'CPU s':>8} {'CPU / np.load':>14}")
        print(f"  {'np.load of the problem arrays':44}{load_w:8.2f} {load_c:8.2f}")
        print(f"  {'mpq solve problem.npz -o plan.npz (CLI)':44}{cli_w:8.2f} {cli_c:8.2f} {cli_c / load_c:13.1f}x   "
              f"peak memory {mem / 2**20:,.0f} MiB = {mem / size:.2f}x the file")
        print(f"  {'load, solve, write in process':44}{in_w:8.2f} {in_c:8.2f} {in_c / load_c:13.1f}x   (CPU s: {parts})")

        jcols = problem_columns(args.json_groups, "layer", 1000 + args.json_groups)
        jproblem = folder / f"layer-{args.json_groups}.json"
        from mpq.schema import save_document
        from mpq.solvers import get_solver

        parsed = jcols.to_problem()
        save_document(parsed, jproblem)
        solve, cli_json, in_json = [], [], []
        get_solver("auto").solve(parsed)
        for _ in range(max(3, args.rounds)):
            with Timed() as t:
                get_solver("auto").solve(parsed)
            solve.append(t)
            cli_json.append(command(["solve", str(jproblem), "-o", str(folder / "plan.json")]))
            in_json.append(in_process(jproblem, folder / "plan-inproc.json")[0])
        s_w, s_c = med(t.wall for t in solve), med(t.cpu for t in solve)
        cj_w, cj_c = med(c[0] for c in cli_json), med(c[1] for c in cli_json)
        ij_w, ij_c = med(t.wall for t in in_json), med(t.cpu for t in in_json)
        print(f"\n{args.json_groups:,} groups as JSON ({jproblem.stat().st_size / 2**20:.1f} MiB)")
        print(f"  {'':44}{'wall s':>8} {'CPU s':>8} {'CPU / solve':>14}")
        print(f"  {'in-process solve of the parsed problem':44}{s_w:8.2f} {s_c:8.2f}")
        print(f"  {'mpq solve p.json -o plan.json (CLI)':44}{cj_w:8.2f} {cj_c:8.2f} {cj_c / s_c:13.1f}x")
        print(f"  {'load, solve, write in process':44}{ij_w:8.2f} {ij_c:8.2f} {ij_c / s_c:13.1f}x")

        print("\nGoals (CPU seconds, measured in the same run)")
        print(f"  {args.groups:,} groups file to file <= 10x np.load: CLI {cli_c / load_c:.1f}x, in process {in_c / load_c:.1f}x ... "
              f"{'MET' if cli_c <= 10 * load_c else 'MISSED'} (CLI)")
        print(f"  peak memory <= 3x the problem file: {mem / size:.2f}x ... {'MET' if mem <= 3 * size else 'MISSED'}")
        print(f"  JSON path at {args.json_groups:,} groups <= 2x the in-process solve: CLI {cj_c / s_c:.1f}x, "
              f"in process {ij_c / s_c:.1f}x ... {'MET' if cj_c <= 2 * s_c else 'MISSED'} (CLI)")


if __name__ == "__main__":
    main()
