"""Commands of the distributed search: ``mpq worker``, ``mpq search status``, and the search options of ``mpq solve``.

``mpq solve problem.json --solver evolutionary --storage URL --study NAME`` creates the study (or
continues it) and runs trials in this process; ``mpq worker`` joins it from anywhere.
"""
from __future__ import annotations

import argparse
import json
import sys

from mpq.cli import COMMANDS, command, fmt_table, print_plan, write_or_print
from mpq.errors import DocumentError


def add_storage_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--storage", required=required, metavar="URL",
                   help="Optuna storage: sqlite:///search.db or journal:///search.log (one machine), "
                        "postgresql://user:password@host/db (many machines)")
    p.add_argument("--study", required=required, metavar="NAME", help="study name in that storage")


def add_heartbeat_arg(p: argparse.ArgumentParser) -> None:
    from .storage import DEFAULT_HEARTBEAT_S, GRACE_FACTOR

    p.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT_S, metavar="SECONDS",
                   help=f"seconds between heartbeats of a running trial (default {DEFAULT_HEARTBEAT_S}); a trial silent "
                        f"for {GRACE_FACTOR}x this is failed and retried by another worker")


def _quiet_optuna(quiet: bool) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING if quiet else optuna.logging.INFO)


def _positive(value, flag: str):
    if value is not None and value < 1:
        raise DocumentError(f"{flag} must be a positive integer, got {value}")
    return value


def print_front(plans, out=None) -> None:
    rows = [[i, f"{p.totals.bytes:,}", f"{p.totals.avg_bits:.3f}", f"{p.solver.objective:.6g}", f"{p.totals.distortion:.6g}"]
            for i, p in enumerate(plans)]
    print(fmt_table(rows, ["#", "bytes", "avg bits", "objective", "additive distortion"]), file=out or sys.stdout)


# ----------------------------------------------------------------------------------------------
# `mpq solve`: the search options, registered around the core command


_core_add, _core_run, _core_help = COMMANDS["solve"]


def _solve_args(p: argparse.ArgumentParser) -> None:
    _core_add(p)
    g = p.add_argument_group("evolutionary search (--solver evolutionary)")
    add_storage_args(g, required=False)
    g.add_argument("--trials", type=int, help="complete trials the search (or study) should reach; default 200")
    g.add_argument("--objective", choices=["additive", "measured"], default="additive",
                   help="additive: the problem's distortions; measured: apply each plan to --model and use its calibration loss")
    g.add_argument("--model", help="module.path:function of the workload for --objective measured "
                                   "(default: the model the problem names)")
    g.add_argument("--population", type=int, help="NSGA-II population (default: 2 x groups, 8..50)")
    g.add_argument("--seed", type=int, help="sampler seed (default 0; random with --storage, so workers differ)")
    add_heartbeat_arg(g)
    g.add_argument("--quiet", action="store_true", help="no per-trial log lines")


def _run_solve(args: argparse.Namespace) -> int:
    if args.solver != "evolutionary":
        if args.storage or args.study:
            raise DocumentError("--storage and --study go with --solver evolutionary")
        return _core_run(args)
    return cmd_search_solve(args)


COMMANDS["solve"] = (_solve_args, _run_solve, _core_help)


def cmd_search_solve(args: argparse.Namespace) -> int:
    from mpq.budget import parse_budgets
    from mpq.schema import Constraints, Problem, load_document
    from mpq.solvers import get_solver

    from mpq.output import check_output

    check_output(args.output, "-o")
    if args.param:
        raise DocumentError(f"--param {args.param[0]}: the evolutionary search takes its settings as options "
                            "(--trials, --population, --seed, --storage, --study, --objective), not --param")
    problem = load_document(args.problem, Problem)
    if args.budget:
        problem = problem.model_copy(update={"constraints": Constraints(**parse_budgets(args.budget))})
    _positive(args.trials, "--trials")
    _positive(args.population, "--population")
    model, evaluate_plan = None, None
    if args.objective == "measured":
        from .measured import load_measured_objective

        model = args.model or (problem.model.name if problem.model is not None and ":" in problem.model.name else None)
        if not model:
            raise DocumentError("--objective measured needs --model module.path:function (the problem names no model)")
        evaluate_plan = load_measured_objective(model, problem)
    elif args.model:
        model = args.model
    _quiet_optuna(args.quiet)
    seed = args.seed if args.seed is not None else (None if args.storage else 0)
    solver = get_solver(
        "evolutionary", time_limit_s=args.time_limit, trials=args.trials, seed=seed, population=args.population,
        storage=args.storage, study=args.study, objective=args.objective, evaluate_plan=evaluate_plan, model=model,
        heartbeat_s=args.heartbeat,
    )
    result = solver.search(problem)
    if result.best is None:
        from mpq.errors import SolverFailed

        raise SolverFailed(f"evolutionary: no feasible plan among {result.trials.get('COMPLETE', 0)} complete trials; give more --trials")
    print(f"{len(result.plans)} non-dominated feasible plans after {result.trials.get('COMPLETE', 0)} complete trials:", file=sys.stderr)
    print_front(result.plans, out=sys.stderr)
    write_or_print(result.best, args.output)
    if args.output:
        print_plan(result.best)
    return 0


# ----------------------------------------------------------------------------------------------
# `mpq worker`


def _worker_args(p: argparse.ArgumentParser) -> None:
    add_storage_args(p, required=True)
    p.add_argument("--trials", type=int, help="run at most this many trials here (default: until the study has its target)")
    p.add_argument("--seed", type=int, help="sampler seed of this worker (default: random)")
    add_heartbeat_arg(p)
    p.add_argument("--quiet", action="store_true", help="no per-trial log lines")


@command("worker", "join an existing search study and run its trials (from any machine that reaches the storage)", _worker_args)
def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import run_worker

    _positive(args.trials, "--trials")
    _quiet_optuna(args.quiet)
    ran, result = run_worker(args.storage, args.study, trials=args.trials, seed=args.seed, heartbeat_s=args.heartbeat)
    print(f"ran {ran} trials; study {args.study!r}: "
          + ", ".join(f"{k.lower()} {v}" for k, v in sorted(result.trials.items()))
          + f"; {len(result.plans)} non-dominated feasible plans")
    return 0


# ----------------------------------------------------------------------------------------------
# `mpq search status`


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["status"], help="status: trial counts and the current non-dominated plans")
    add_storage_args(p, required=True)
    p.add_argument("--json", action="store_true", help="print JSON: counts and the plans as mpq.plan/v1 documents")


@command("search", "inspect a search study: `mpq search status --storage URL --study NAME`", _search_args)
def cmd_search(args: argparse.Namespace) -> int:
    from .status import STATES, study_status

    st = study_status(args.storage, args.study)
    if args.json:
        print(json.dumps(st.as_dict(), indent=2))
        return 0
    print(f"study {st.study!r} in {st.storage}: objective {st.spec.objective}"
          + (f" on {st.spec.model}" if st.spec.model else "") + f", problem {st.spec.fingerprint}")
    done = st.trials.get("COMPLETE", 0)
    print(f"trials: {done}/{st.spec.trials} complete; " + ", ".join(f"{s.lower()} {st.trials.get(s, 0)}" for s in STATES))
    if not st.plans:
        print("no feasible plan yet")
        return 0
    print(f"\n{len(st.plans)} non-dominated feasible plans:")
    print_front(st.plans)
    return 0
