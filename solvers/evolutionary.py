"""Evolutionary search (EQ-Net's genetic search): Optuna's NSGA-II over one option per group.

Two objectives, both minimized: the distortion and the total weight bytes. The first generation
is seeded with exact solutions (points of the DP frontier, the additive optimum first), so the
search starts where the additive model is best and spreads from there. The distortion is the
problem's additive one, or a measured one (``evaluate_plan(plan) -> float``, e.g. the calibration
loss of the quantized model) that sees the interactions the additive model misses.
Infeasible candidates steer the search through Optuna's constraints but are never reported.
The solver runs its trials in an in-memory Optuna study; :mod:`mpq.search` runs the same algorithm
(:meth:`EvolutionarySolver.run_trials` over any study) in shared, persistent studies that workers
on other machines join and that continue after a restart.
"""
from __future__ import annotations

import functools
import math
import os
import socket
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Callable, Literal, Optional

import numpy as np

from pydantic import Field, Strict, model_validator

from mpq.errors import SolverFailed
from mpq.settings import Count, Hook, Int
from mpq.schema import Plan, Problem, Provenance, SolverInfo

from .base import Solution, Solver, register_solver
from .compiled import Compiled, compile_problem
from ._dp import FrontierTooLarge, pareto_dp

#: Seeding runs the exact DP frontier only up to this many groups (its cost grows with the frontier).
MAX_SEED_GROUPS = 2000
DEFAULT_TRIALS = 200
OBJECTIVES = ("additive", "measured")
#: Both objectives are minimized: distortion (additive or measured), then total weight bytes.
DIRECTIONS = ("minimize", "minimize")


@dataclass
class SearchResult:
    """What a search found: every non-dominated feasible plan, and the best one within the budget."""

    plans: list[Plan]  # non-dominated (distortion, bytes) and within every constraint, smallest first
    best: Optional[Plan]  # lowest distortion within every constraint
    trials: dict[str, int] = field(default_factory=dict)  # trial counts by state (COMPLETE, FAIL, ...)
    bound: Optional[float] = None  # proven lower bound on the additive distortion, when the DP gives one
    study: Optional[str] = None


class SearchSpace:
    """The decision groups of a compiled problem as Optuna categorical parameters (option ids)."""

    def __init__(self, cp: Compiled):
        self.cp = cp
        self.names = [g[0] for g in cp.groups]  # a tie is named by its first layer
        self.index = [{oid: k for k, oid in enumerate(ids)} for ids in cp.option_ids]
        self.sizes = group_bytes(cp)

    def suggest(self, trial) -> np.ndarray:
        return np.array(
            [self.index[g][trial.suggest_categorical(name, self.cp.option_ids[g])] for g, name in enumerate(self.names)],
            dtype=np.int64,
        )

    def params(self, choice: np.ndarray) -> dict[str, str]:
        return {name: self.cp.option_ids[g][int(choice[g])] for g, name in enumerate(self.names)}

    def choice(self, params: dict) -> Optional[np.ndarray]:
        """The choice a trial's parameters encode, or None when they do not match this problem."""
        try:
            return np.array([self.index[g][params[name]] for g, name in enumerate(self.names)], dtype=np.int64)
        except KeyError:
            return None

    def size(self, choice: np.ndarray) -> int:
        return int(sum(int(s[k]) for s, k in zip(self.sizes, choice)))


def group_bytes(cp: Compiled) -> list[np.ndarray]:
    """Weight bytes of each group's options, summed over the group's layers (as :mod:`mpq.sizes` counts them)."""
    by_name = {l.name: l for l in cp.problem.layers}
    out = []
    for members, ids in zip(cp.groups, cp.option_ids):
        out.append(np.array([sum(by_name[m].option(oid).bytes for m in members) for oid in ids], dtype=np.int64))
    return out


def violation(cp: Compiled, choice: np.ndarray) -> list[float]:
    """Relative excess per constraint, Optuna's convention: <= 0 within the constraint."""
    use = cp.usage(choice)
    out = []
    for n, cap in cp.caps.items():
        excess = (use[n] - cap) / cap
        out.append(excess if use[n] > cap * (1 + 1e-12) else min(0.0, excess))
    return out


def exact_seeds(cp: Compiled, sizes: list[np.ndarray], count: int,
                deadline: Optional[float] = None) -> tuple[list[np.ndarray], Optional[float]]:
    """Up to ``count`` feasible points of the exact DP frontier (the additive optimum first) and its bound.

    The frontier is taken over the first integer size constraint (bytes, bits, BitOps), else over
    bytes. The bound is proven only for one such constraint without pairwise terms.
    """
    if cp.n_groups > MAX_SEED_GROUPS:
        return [], None
    name = next(
        (n for n in ("max_bytes", "max_avg_bits", "max_bitops")
         if n in cp.caps and all(np.issubdtype(r.dtype, np.integer) for r in cp.resources[n])),
        None,
    )
    weights, cap = (cp.resources[name], cp.caps[name]) if name else (sizes, np.inf)
    try:
        front = pareto_dp(cp.cost, [np.asarray(w, dtype=np.int64) for w in weights], cap, deadline=deadline)
    except FrontierTooLarge:  # out of the search's time for seeding: start from random plans
        return [], None
    if not len(front.cost):
        return [], None
    bound = float(front.cost[-1]) if name and len(cp.caps) == 1 and not cp.pairs else None
    picks = np.unique(np.round(np.linspace(0, len(front.cost) - 1, max(1, min(count, len(front.cost))))).astype(int))
    seeds = [c for c in (front.choice(int(i)) for i in picks[::-1]) if cp.fits(c)]
    return seeds, bound


def non_dominated(points: list[tuple[float, int, int]]) -> list[int]:
    """Indices of the points (distortion, bytes, tie-break) no other point dominates, smallest bytes first.

    Of several points with equal values only the first (lowest tie-break) is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0], points[i][2]))
    keep, best = [], math.inf
    for i in order:
        if points[i][0] < best:
            keep.append(i)
            best = points[i][0]
    return keep


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimized) and bounded by ``reference``."""
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, floor = 0.0, reference[1]
    # sweep by the first coordinate; each point adds the strip below the lowest second coordinate so far
    for k, (x, y) in enumerate(inside):
        if y < floor:
            area += (reference[0] - x) * (floor - y)
            floor = y
    return area


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@register_solver
class EvolutionarySolver(Solver):
    """EQ-Net-style genetic search (NSGA-II, distortion against size) seeded with exact solutions."""

    name = "evolutionary"
    exact = False

    class Settings(Solver.Settings):
        trials: Optional[Count] = Field(None, description=f"trials to run (default {DEFAULT_TRIALS}, or the study's own)")
        seed: Optional[Int] = Field(0, description="sampler seed (none: random)")
        population: Optional[Annotated[int, Strict(), Field(ge=2)]] = Field(None, description="NSGA-II population size")
        objective: Literal[OBJECTIVES] = Field("additive", description="the problem's additive distortion, or evaluate_plan's")
        evaluate_plan: Hook = Field(None, description="plan -> measured distortion, for objective 'measured'")
        progress: Hook = Field(None, description="called with (fraction done, best plan so far)")
        should_stop: Hook = Field(None, description="polled between trials; true ends the search early")

        @model_validator(mode="after")
        def _combinations(self):
            if self.objective == "measured" and self.evaluate_plan is None:
                raise ValueError("objective 'measured' needs evaluate_plan, a callable plan -> float "
                                 "(on the command line: --objective measured --model MODEL)")
            return self

    def __init__(self, **settings):
        super().__init__(**settings)
        if self.objective != "measured":
            self.evaluate_plan = None
        self._cache: dict[tuple, float] = {}
        #: the trial this process is running, None between trials (a caller requeues it when interrupted)
        self.current_trial: Optional[int] = None
        self._learned: set[int] = set()  # trial numbers whose measured values are in the cache

    # ------------------------------------------------------------------------------------------
    # the solver: an in-memory study

    def search(self, problem: Problem, provenance: Optional[Provenance] = None) -> SearchResult:
        """Run the search in memory and return every non-dominated feasible plan it found."""
        started = time.perf_counter()
        cp = compile_problem(problem)
        cp.check_feasible()
        return self._search(cp, started, provenance)

    def _solve(self, cp: Compiled) -> Solution:
        """The best plan of an in-memory search; a measured objective is the plan's objective."""
        best = self.best(self._search(with_layers(cp), time.perf_counter()))
        return Solution(plan_choice(cp, best), "feasible", best.solver.bound, objective=best.solver.objective)

    def _search(self, cp: Compiled, started: float, provenance: Optional[Provenance] = None) -> SearchResult:
        import optuna

        space = SearchSpace(cp)
        population = self.population or default_population(cp)
        seeds, bound = self.seeds(cp, space, population, started)
        study = optuna.create_study(directions=list(DIRECTIONS), sampler=self.sampler(population))
        target = self.trials or DEFAULT_TRIALS
        self.enqueue(study, space, seeds, target)
        self.run_trials(study, cp, space, target, bound=bound, started=started)
        return self.collect(study, cp, space, bound=bound, started=started, provenance=provenance)

    def best(self, result: SearchResult) -> Plan:
        """The search's best plan within every constraint, or a :class:`SolverFailed` saying there is none."""
        if result.best is None:
            raise SolverFailed(
                f"evolutionary: no feasible plan among {result.trials.get('COMPLETE', 0)} complete trials; "
                "give more trials or use an exact solver"
            )
        return result.best

    # ------------------------------------------------------------------------------------------
    # the algorithm over any Optuna study (mpq.search runs it in shared, persistent ones)

    def seeds(self, cp: Compiled, space: SearchSpace, count: int,
              started: Optional[float] = None) -> tuple[list[np.ndarray], Optional[float]]:
        """Up to ``count`` exact seeds and the proven bound (none for a measured objective).

        Seeding takes at most half of the time limit counted from ``started``.
        """
        deadline = None if self.time_limit_s is None or started is None else started + self.time_limit_s / 2
        seeds, bound = exact_seeds(cp, space.sizes, count, deadline)
        return seeds, (None if self.objective == "measured" else bound)

    def enqueue(self, study, space: SearchSpace, seeds: list[np.ndarray], target: int) -> None:
        """Queue the seeds (at most ``target``) as the study's first trials."""
        for choice in seeds[:target]:
            study.enqueue_trial(space.params(choice), skip_if_exists=True)

    def sampler(self, population: int):
        from optuna.samplers import NSGAIISampler

        if _has_set_constraint():  # Optuna >= 5 reads the constraints each trial sets
            return NSGAIISampler(population_size=population, seed=self.seed)
        return NSGAIISampler(population_size=population, seed=self.seed, constraints_func=_constraints_of)

    def objective_fn(self, cp: Compiled, space: SearchSpace) -> Callable:
        me = worker_id()

        def objective(trial) -> tuple[float, int]:
            self.current_trial = trial.number
            choice = space.suggest(trial)
            excess = violation(cp, choice)
            additive = cp.objective(choice)
            trial.set_user_attr("mpq", {"worker": me, "violation": excess, "additive": additive})  # one write
            if _has_set_constraint():
                with warnings.catch_warnings():  # a retried trial inherits its constraints: keep them
                    warnings.simplefilter("ignore")
                    for n, v in zip(cp.caps, excess):
                        trial.set_constraint(n, v)
            size = space.size(choice)
            if self.evaluate_plan is None or not cp.fits(choice):
                return additive, size  # an infeasible candidate is never measured nor reported
            key = tuple(int(k) for k in choice)
            if key not in self._cache:
                self._learn_from(trial.study, space)  # another process may have measured this plan already
            if key not in self._cache:
                info = SolverInfo(name=self.name, status="feasible", objective=additive)
                value = float(self.evaluate_plan(cp.plan(choice, info)))
                if not math.isfinite(value):
                    raise SolverFailed(f"evaluate_plan returned {value} for trial {trial.number}; it must return a finite number")
                self._cache[key] = value
            return self._cache[key], size

        return objective

    def run_trials(self, study, cp: Compiled, space: SearchSpace, target: int, *, max_trials: Optional[int] = None,
                   bound: Optional[float] = None, started: Optional[float] = None,
                   wait: Optional[Callable[[], None]] = None) -> int:
        """Run trials in this process until the study has ``target`` complete ones; returns how many ran here.

        ``wait``, for a study that other processes serve and whose dead processes' trials get failed
        (:mod:`mpq.search` gives it), is called instead of leaving while the remaining trials all run
        elsewhere, so that this process retries the trial of one that dies. Queued trials always run
        and the loop leaves only when no trial is running, so a retry is never left behind; the study
        may end a trial or two past ``target`` when several processes finish at once.
        """
        from optuna.trial import TrialState

        started = time.perf_counter() if started is None else started
        objective = self.objective_fn(cp, space)
        ran = 0
        while True:
            if self.should_stop is not None and self.should_stop():
                break
            if max_trials is not None and ran >= max_trials:
                break
            if self.time_limit_s is not None and time.perf_counter() - started >= self.time_limit_s:
                break
            counts = Counter(t.state for t in study.get_trials(deepcopy=False))
            complete, running, waiting = (counts[s] for s in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))
            elsewhere = running if wait is not None else 0
            if not waiting and complete + elsewhere >= target:
                if complete >= target and not elsewhere:
                    break
                wait()  # the rest is running elsewhere: stay, to retry it should that process die
                continue
            self.current_trial = None
            study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False, show_progress_bar=False)
            ran += 1
            if self.progress is not None:
                best = self.collect(study, cp, space, bound=bound, started=started).best
                self.progress(min(1.0, (complete + 1) / target), best)
        return ran

    def _learn_from(self, study, space: SearchSpace) -> None:
        """Cache the measured values of the study's complete feasible trials, so no plan is measured twice."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number in self._learned or t.values is None:
                continue
            self._learned.add(t.number)
            choice = space.choice(t.params)
            if choice is not None and space.cp.fits(choice):
                self._cache.setdefault(tuple(int(k) for k in choice), float(t.values[0]))

    def collect(self, study, cp: Compiled, space: SearchSpace, *, bound: Optional[float] = None,
                started: Optional[float] = None, provenance: Optional[Provenance] = None) -> SearchResult:
        """The non-dominated feasible plans among the study's complete trials (each plan rechecked exactly)."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        points, choices = [], []
        for t in trials:
            if t.state != TrialState.COMPLETE or t.values is None or len(t.values) != 2:
                continue
            choice = space.choice(t.params)
            if choice is None or not cp.fits(choice):
                continue
            points.append((float(t.values[0]), space.size(choice), t.number))
            choices.append(choice)
        seconds = round(time.perf_counter() - started, 6) if started is not None else 0.0
        plans = []
        for i in non_dominated(points):
            value = points[i][0]
            gap = None
            if bound is not None:
                gap = max(0.0, (value - bound) / max(abs(value), 1e-300)) if value else 0.0
            info = SolverInfo(name=self.name, status="feasible", objective=value, bound=bound, gap=gap, seconds=seconds)
            plans.append(cp.plan(choices[i], info, provenance))
        return SearchResult(plans=plans, best=plans[-1] if plans else None, trials=dict(counts), bound=bound,
                            study=getattr(study, "study_name", None))


def with_layers(cp: Compiled) -> Compiled:
    """``cp`` as compiled from its JSON problem (a columnar one is converted): the search sizes and builds plans by layer."""
    return cp if cp.problem is not None else compile_problem(cp.columns.to_problem())


def plan_choice(cp: Compiled, plan: Plan) -> np.ndarray:
    """The option index per group of ``cp`` that ``plan`` chose."""
    by_layer = {l.name: l.option for l in plan.layers}
    return np.array([ids.index(by_layer[names[0]]) for names, ids in zip(cp.groups, cp.option_ids)], dtype=np.int64)


def default_population(cp: Compiled) -> int:
    """NSGA-II population: twice the number of groups, between 8 and 50."""
    return int(min(50, max(8, 2 * cp.n_groups)))


@functools.lru_cache(maxsize=None)
def _has_set_constraint() -> bool:
    try:
        from optuna.trial import Trial
    except ImportError:  # pragma: no cover
        return False
    return hasattr(Trial, "set_constraint")


def _constraints_of(trial) -> list[float]:
    return list(trial.user_attrs.get("mpq", {}).get("violation", [0.0]))
