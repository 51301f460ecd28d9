"""A worker: join an existing study and run its trials until the study has its complete trials.

Any number of workers, on any machines that reach the storage (and, for a measured objective,
the model), may serve one study. Each reads the problem and settings from the study itself.
"""
from __future__ import annotations

from typing import Callable, Optional

from mpq.schema import Plan
from mpq.solvers.compiled import compile_problem
from mpq.solvers.evolutionary import EvolutionarySolver, SearchResult, SearchSpace

from .shared import serve
from .storage import open_storage
from .study import SearchSpec, join_study


def solver_for(spec: SearchSpec, *, seed: Optional[int] = None, evaluate_plan: Optional[Callable[[Plan], float]] = None,
               progress=None, should_stop=None) -> EvolutionarySolver:
    """The solver a study's settings describe; a measured study loads its workload unless ``evaluate_plan`` is given."""
    if spec.objective == "measured" and evaluate_plan is None:
        from mpq.errors import WorkloadError

        from .measured import load_measured_objective

        if not spec.model:
            raise WorkloadError("the study's objective is 'measured' but it names no model to evaluate plans on")
        evaluate_plan = load_measured_objective(spec.model, spec.problem)
    return EvolutionarySolver(
        seed=seed, population=spec.population, objective=spec.objective, evaluate_plan=evaluate_plan,
        progress=progress, should_stop=should_stop,
    )


def run_worker(
    url: str,
    study_name: str,
    *,
    trials: Optional[int] = None,
    seed: Optional[int] = None,
    heartbeat_s: Optional[int] = None,
    evaluate_plan: Optional[Callable[[Plan], float]] = None,
    progress=None,
    should_stop=None,
) -> tuple[int, SearchResult]:
    """Serve study ``study_name`` (at most ``trials`` trials here); returns (trials run here, the study's result)."""
    kwargs = {} if heartbeat_s is None else {"heartbeat_s": heartbeat_s}
    storage = open_storage(url, **kwargs)
    study, spec = join_study(url, study_name, storage=storage)
    solver = solver_for(spec, seed=seed, evaluate_plan=evaluate_plan, progress=progress, should_stop=should_stop)
    cp = compile_problem(spec.problem)
    space = SearchSpace(cp)
    study.sampler = solver.sampler(spec.population)
    bound = solver.seeds(cp, space, 1)[1]
    ran = serve(solver, study, cp, space, spec.trials, storage=storage, max_trials=trials, bound=bound)
    return ran, solver.collect(study, cp, space, bound=bound)
