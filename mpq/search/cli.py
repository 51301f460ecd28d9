"""Commands of the distributed search: ``mpq worker``, ``mpq search status``, and the search options of ``mpq solve``.

``mpq solve problem.json --solver evolutionary --storage URL --study NAME`` creates the study (or
continues it) and runs trials in this process; ``mpq worker`` joins it from anywhere. The solve
command declares the extension point (:class:`mpq.cli.SolverOptions`); this module registers into it.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from mpq.cli import SolverOptions, command, register_solver_options
from mpq.tables import fmt_table
from mpq.errors import DocumentError


def add_storage_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--storage", required=required, metavar="URL",
                   help="Optuna storage: sqlite:///search.db or journal:///search.log (one machine), "
                        "postgresql://user:password@host/db (many machines)")
    p.add_argument("--study", required=required, metavar="NAME", help="study name in that storage")


def add_heartbeat_arg(p: argparse.ArgumentParser, default: Optional[int] = -1) -> None:
    from .storage import DEFAULT_HEARTBEAT_S, GRACE_FACTOR

    p.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT_S if default == -1 else default, metavar="SECONDS",
                   help=f"seconds between heartbeats of a running trial (default {DEFAULT_HEARTBEAT_S}); a trial silent "
                        f"for {GRACE_FACTOR}x this is failed and retried by another worker")


def _quiet_optuna() -> None:
    """Optuna's per-trial log lines give way to mpq's progress bar; its warnings still show."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _positive(value, flag: str):
    if value is not None and value < 1:
        raise DocumentError(f"{flag} must be a positive integer, got {value}")
    return value


def print_front(plans, out=None) -> None:
    rows = [[i, f"{p.totals.bytes:,}", f"{p.totals.avg_bits:.3f}", f"{p.solver.objective:.6g}", f"{p.totals.distortion:.6g}"]
            for i, p in enumerate(plans)]
    print(fmt_table(rows, ["#", "bytes", "avg bits", "objective", "additive distortion"]), file=out or sys.stdout)


# ----------------------------------------------------------------------------------------------
# `mpq solve --solver evolutionary`: the options the search contributes to the solve command


def _search_args(g) -> None:
    add_storage_args(g, required=False)
    g.add_argument("--trials", type=int, help="complete trials the search (or study) should reach; default 200")
    g.add_argument("--objective", choices=["additive", "measured"], default=None,
                   help="additive (default): the problem's distortions; measured: apply each plan to --model and use its calibration loss")
    g.add_argument("--model", help="module.path:function of the workload for --objective measured "
                                   "(default: the model the problem names)")
    g.add_argument("--population", type=int, help="NSGA-II population (default: 2 x groups, 8..50)")
    g.add_argument("--seed", type=int, help="sampler seed (default 0; random with --storage, so workers differ)")
    add_heartbeat_arg(g, default=None)
    g.add_argument("--quiet", action="store_true", help="no progress bar")


_SEARCH_FLAGS = {"storage": "--storage", "study": "--study", "trials": "--trials", "objective": "--objective",
                 "model": "--model", "population": "--population", "seed": "--seed", "heartbeat": "--heartbeat"}


def _given(args: argparse.Namespace) -> list[str]:
    return [flag for dest, flag in _SEARCH_FLAGS.items() if getattr(args, dest, None) is not None] + (
        ["--quiet"] if getattr(args, "quiet", False) else [])


def _search_settings(args: argparse.Namespace, problem) -> dict:
    """The evolutionary solver's settings from the search options (unset ones keep the solver's defaults).

    The study options (``--storage``, ``--study``, ``--heartbeat``, ``--model`` of an additive search) are
    not solver settings: :func:`_search_solve` runs the solver in that study.
    """
    _positive(args.trials, "--trials")
    _positive(args.population, "--population")
    if (args.storage is None) != (args.study is None):
        raise DocumentError("--storage and --study go together: give both (an Optuna storage URL and a study name) or neither")
    if args.server and args.storage is not None:
        raise DocumentError("--storage runs the search here: leave out --server (the server searches in its own "
                            "--search-storage; name a study there with --param study=NAME)")
    objective = args.objective or "additive"
    settings: dict = {"objective": objective}
    if objective == "measured":
        from .measured import load_measured_objective

        if args.server:
            raise DocumentError("--objective measured runs the model here: leave out --server")
        settings["evaluate_plan"] = load_measured_objective(_measured_model(args, problem), _as_json(problem))
    if not args.server:
        _quiet_optuna()
        settings["seed"] = args.seed if args.seed is not None else (None if args.storage else 0)
    elif args.seed is not None:
        settings["seed"] = args.seed
    for dest in ("trials", "population"):
        if getattr(args, dest) is not None:
            settings[dest] = getattr(args, dest)
    return settings


def _measured_model(args: argparse.Namespace, problem) -> str:
    """The workload a measured objective loads: ``--model``, else the problem's model when it is a reference."""
    named = problem.model.name if problem.model is not None else ""
    model = args.model or (named if ":" in named else None)
    if not model:
        raise DocumentError("--objective measured needs --model module.path:function (the problem names no model)")
    return model


def _as_json(problem):
    from mpq.columnar import ProblemColumns

    return problem.to_problem() if isinstance(problem, ProblemColumns) else problem


def _search_solve(solver, problem, args: argparse.Namespace):
    """Run the search (in the study of ``--storage``/``--study`` when given), print its non-dominated front
    to stderr, and answer the best plan."""
    from mpq.console import SearchBar
    from mpq.errors import SolverFailed
    from mpq.solvers.evolutionary import DEFAULT_TRIALS

    search = solver
    if args.storage is not None:
        from .shared import StudySearch

        model = _measured_model(args, problem) if solver.objective == "measured" else args.model
        search = StudySearch(solver, args.storage, args.study, model=model, heartbeat_s=args.heartbeat)
    bar = SearchBar(solver.trials or DEFAULT_TRIALS, desc="evolutionary", quiet=bool(getattr(args, "quiet", False)))
    if solver.progress is None:
        solver.progress = bar
    try:
        result = search.search(_as_json(problem))
    finally:
        bar.close()
    if result.best is None:
        raise SolverFailed(f"evolutionary: no feasible plan among {result.trials.get('COMPLETE', 0)} complete trials; give more --trials")
    print(f"{len(result.plans)} non-dominated feasible plans after {result.trials.get('COMPLETE', 0)} complete trials:", file=sys.stderr)
    print_front(result.plans, out=sys.stderr)
    return result.best


register_solver_options(SolverOptions(
    solver="evolutionary", title="evolutionary search", add_args=_search_args, settings=_search_settings,
    given=_given, solve=_search_solve,
))


# ----------------------------------------------------------------------------------------------
# `mpq worker`


def _worker_args(p: argparse.ArgumentParser) -> None:
    add_storage_args(p, required=True)
    p.add_argument("--trials", type=int, help="run at most this many trials here (default: until the study has its target)")
    p.add_argument("--seed", type=int, help="sampler seed of this worker (default: random)")
    add_heartbeat_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("worker", "join an existing search study and run its trials (from any machine that reaches the storage)", _worker_args)
def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import run_worker

    _positive(args.trials, "--trials")
    from mpq.console import SearchBar

    _quiet_optuna()
    bar = SearchBar(100, desc=f"worker on {args.study}", quiet=args.quiet, unit="%")  # progress of the whole study
    try:
        ran, result = run_worker(args.storage, args.study, trials=args.trials, seed=args.seed, heartbeat_s=args.heartbeat,
                                 progress=bar)
    finally:
        bar.close()
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
