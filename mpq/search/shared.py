"""The evolutionary search in a shared, persistent Optuna study, and the trial loop every worker of a study runs.

:class:`StudySearch` creates the study (or continues it when it holds the same problem and
settings), queues the exact seeds once, and runs trials in this process; ``mpq worker``
(:mod:`mpq.search.worker`) joins it from anywhere. The algorithm is the evolutionary solver's
(:mod:`mpq.solvers.evolutionary`); this module adds what sharing a study needs: storages with
heartbeats, waiting for the trials of other workers, and requeueing an interrupted trial.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from mpq.schema import Plan, Problem, Provenance, SolverInfo
from mpq.solvers.compiled import Compiled, compile_any, compile_problem
from mpq.solvers.evolutionary import (
    DEFAULT_TRIALS, EvolutionarySolver, SearchResult, SearchSpace, default_population, plan_choice, with_layers,
)

from .storage import open_storage, retry_callback
from .study import SearchSpec, open_study

#: The registered solver whose search runs in a shared study.
SOLVER = EvolutionarySolver.name


def serve(solver: EvolutionarySolver, study, cp: Compiled, space: SearchSpace, target: int, *, storage=None,
          max_trials: Optional[int] = None, bound: Optional[float] = None, started: Optional[float] = None) -> int:
    """Run ``solver``'s trials of a shared study in this process (see :meth:`EvolutionarySolver.run_trials`).

    With heartbeats (an RDB storage), a worker whose remaining trials all run elsewhere waits instead
    of leaving, failing stale trials as it polls, so that it retries the trial of a worker that dies.
    A trial interrupted here (Ctrl-C) is queued again, so that no trial is lost.
    """
    heartbeat = getattr(storage, "heartbeat_interval", None)
    wait = None
    if heartbeat:
        import optuna

        poll = max(0.2, min(2.0, heartbeat / 2))

        def wait() -> None:
            optuna.storages.fail_stale_trials(study)
            time.sleep(poll)

    try:
        return solver.run_trials(study, cp, space, target, max_trials=max_trials, bound=bound, started=started, wait=wait)
    except KeyboardInterrupt:
        requeue(study, solver.current_trial)
        raise


def requeue(study, number: Optional[int]) -> None:
    """Optuna marks an interrupted trial failed; enqueue its plan again (recording ``failed_trial`` on the copy)."""
    from optuna.trial import TrialState

    trial = next((t for t in study.get_trials(deepcopy=True) if t.number == number), None)
    if trial is not None and trial.state == TrialState.FAIL:
        retry_callback()(study, trial)


class StudySearch:
    """``solver``'s search in study ``study`` of the Optuna storage at ``storage`` (created, or continued).

    ``model`` is the workload reference recorded in the study for measured objectives (workers load
    it); ``heartbeat_s`` the seconds between a running trial's heartbeats (default: the storage's).
    """

    def __init__(self, solver: EvolutionarySolver, storage: str, study: str, *, model: Optional[str] = None,
                 heartbeat_s: Optional[int] = None):
        self.solver, self.storage, self.study, self.model, self.heartbeat_s = solver, storage, study, model, heartbeat_s

    def search(self, problem: Problem, provenance: Optional[Provenance] = None) -> SearchResult:
        """Run the search (creating or continuing the study) and return every non-dominated feasible plan."""
        started = time.perf_counter()
        cp = compile_problem(problem)
        cp.check_feasible()
        return self._search(cp, started, provenance)

    def run(self, problem) -> tuple[Compiled, np.ndarray, SolverInfo]:
        """As :meth:`mpq.solvers.base.Solver.run`: the compiled problem, the best choice and its solver record."""
        started = time.perf_counter()
        cp = compile_any(problem)
        cp.check_feasible()
        best = self.solver.best(self._search(with_layers(cp), started))
        return cp, plan_choice(cp, best), best.solver

    def solve(self, problem, provenance: Optional[Provenance] = None) -> Plan:
        """The best plan within every constraint that the study holds after this run."""
        cp, choice, info = self.run(problem)
        return cp.plan(choice, info, provenance)

    def _search(self, cp: Compiled, started: float, provenance: Optional[Provenance] = None) -> SearchResult:
        solver = self.solver
        space = SearchSpace(cp)
        population = solver.population or default_population(cp)
        seeds, bound = solver.seeds(cp, space, population, started)
        kwargs = {} if self.heartbeat_s is None else {"heartbeat_s": self.heartbeat_s}
        storage = open_storage(self.storage, **kwargs)
        spec = SearchSpec.for_problem(
            cp.problem, objective=solver.objective, model=self.model, population=population,
            trials=solver.trials or DEFAULT_TRIALS, seed=solver.seed,
        )
        study, spec, created = open_study(self.storage, self.study, spec, trials=solver.trials,
                                          sampler=solver.sampler(population), storage=storage)
        if created:
            solver.enqueue(study, space, seeds, spec.trials)
        serve(solver, study, cp, space, spec.trials, storage=storage, bound=bound, started=started)
        return solver.collect(study, cp, space, bound=bound, started=started, provenance=provenance)
