"""Synchronous work (plans, frontiers) done off the event loop, in worker processes.

Each task takes the raw request body and returns plain data: a list of plan records, or an error
answer. Parsing, validation and solving all happen in the worker, so the server process only
moves bytes, and a slow solve never stalls other requests. With ``workers=0`` the same functions
run in threads of the server process.
"""
from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import signal
import threading
import time
from contextlib import contextmanager
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Optional

from .limits import Limits, OverLimit
from .cache import ProblemCache
from .columns import plan_columns_bytes, query_request, read_problem_columns
from .payloads import FrontierRequest, PlanRequest, error_answer, make_solver, parse_body
from .store import PlanRecord


def import_plugins(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)


def exit_with_parent(parent: int) -> None:
    """Called in a worker thread: end this process once its server is gone (kill -9 leaves workers behind)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


def _init_worker(plugins: tuple[str, ...], parent: int) -> None:
    import mpq.solvers.base as base

    threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()
    base.available_solvers()  # import every solver now, not on the first request
    import_plugins(plugins)


def _ready() -> bool:
    return True


@contextmanager
def deadline(seconds: float, grace: float):
    """Stop the work in this worker process ``grace`` seconds after its own time limit (a solver that ignores
    ``time_limit_s`` then answers 422 naming it), so no request holds a worker longer than it asked for.
    Only in a worker's main thread (``workers=0`` solves in threads, where the server's cap applies)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise OverLimit(
            f"options.time_limit_s: the solver ran past its limit of {seconds:g} s (and {grace:g} s of grace) and was "
            "stopped; raise time_limit_s, or run it as a background search: POST /v1/searches", 422,
        )

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds + grace)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: validated, compiled problems of this process, by request body without its constraints
CACHE = ProblemCache()


def solve_plan(body: bytes, limits: Limits, search_storage: Optional[str] = None, as_columns: bool = False) -> dict[str, Any]:
    """``POST /v1/plans`` in a worker: {"records": [PlanRecord], "timing": {...}} or {"error": (status, body)};
    with ``as_columns``, also the plan as a columnar ``.npz`` ("columns").

    A body that differs from one validated before only in its constraints reuses that validation and
    compiled problem (:mod:`mpq.service.cache`).
    """
    t0 = time.perf_counter()
    context = repr((limits, search_storage))  # validated under other limits is not validated under these
    try:
        hit = CACHE.lookup(body, context)
        if hit is None:
            req = parse_body(body, PlanRequest)
            limits.check_problem(req.problem)
            limits.check_options(req.options)
            seconds = limits.time_limit(req.options, limits.max_plan_seconds, limits.default_plan_seconds)
            solver = make_solver(req.solver, {**req.options, "time_limit_s": seconds}, search_storage)
            entry, problem = CACHE.add(body, req, seconds, context), req.problem
        else:
            (entry, problem), seconds = hit, hit[0].seconds
            solver = make_solver(entry.request.solver, {**entry.request.options, "time_limit_s": seconds}, search_storage)
        t1 = time.perf_counter()
        with deadline(seconds, limits.plan_grace_s):
            cp, choice, info = solver.run(entry.compile(problem))
        t2 = time.perf_counter()
        record = entry.record(cp, choice, info)
        columns = plan_columns_bytes(record.body) if as_columns else None
    except Exception as e:  # every failure is answered, never raised into the server
        return {"error": error_answer(e)}
    t3 = time.perf_counter()
    return {"records": [record], "columns": columns, "timing": {"validate": t1 - t0, "solve": t2 - t1, "encode": t3 - t2}}


def solve_plan_columns(body: bytes, limits: Limits, search_storage: Optional[str], solver_name: str, options: str,
                       as_columns: bool) -> dict[str, Any]:
    """``POST /v1/plans`` with a columnar problem body (``.npz``), the solver and its settings from the query;
    answered like :func:`solve_plan`. The solvers take the columns as they are (no object per option)."""
    t0 = time.perf_counter()
    try:
        columns = read_problem_columns(body, limits)
        name, settings = query_request(solver_name, options)
        limits.check_options(settings)
        seconds = limits.time_limit(settings, limits.max_plan_seconds, limits.default_plan_seconds)
        solver = make_solver(name, {**settings, "time_limit_s": seconds}, search_storage)
        t1 = time.perf_counter()
        with deadline(seconds, limits.plan_grace_s):
            cp, choice, info = solver.run(columns)
        t2 = time.perf_counter()
        record = PlanRecord.of(cp.plan(choice, info))
        out = plan_columns_bytes(record.body) if as_columns else None
    except Exception as e:  # every failure is answered, never raised into the server
        return {"error": error_answer(e)}
    t3 = time.perf_counter()
    return {"records": [record], "columns": out, "timing": {"validate": t1 - t0, "solve": t2 - t1, "encode": t3 - t2}}


def solve_frontier(body: bytes, limits: Limits, search_storage: Optional[str] = None) -> dict[str, Any]:
    from mpq.solvers.frontier import frontier_plans

    t0 = time.perf_counter()
    try:
        req = parse_body(body, FrontierRequest)
        limits.check_problem(req.problem)
        points = req.max_points or limits.default_frontier_points
        if points > limits.max_frontier_points:
            raise OverLimit(f"max_points: {points} is over this service's limit of {limits.max_frontier_points}", 422)
        t1 = time.perf_counter()
        with deadline(limits.max_plan_seconds, limits.plan_grace_s):
            plans = frontier_plans(req.problem, points)
        t2 = time.perf_counter()
        records = [PlanRecord.of(p) for p in plans]
    except Exception as e:
        return {"error": error_answer(e)}
    t3 = time.perf_counter()
    return {"records": records, "timing": {"validate": t1 - t0, "solve": t2 - t1, "encode": t3 - t2}}


class SolvePool:
    """Runs :func:`solve_plan` / :func:`solve_frontier` in ``workers`` processes (or threads when 0)."""

    def __init__(self, workers: int, plugins: tuple[str, ...] = ()):
        self.workers, self.plugins = workers, plugins
        self._executor = self._new()
        self._warm_for: Optional[Executor] = None
        self._warming: Optional[asyncio.Future] = None

    def _new(self) -> Executor:
        if self.workers <= 0:
            return ThreadPoolExecutor(max_workers=4, thread_name_prefix="mpq-solve")
        return ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(self.plugins, os.getpid()),
        )

    async def warm(self) -> None:
        """Start every worker now, so no request's time limit pays for process start and imports."""
        if self._warm_for is not self._executor:
            loop = asyncio.get_running_loop()
            self._warm_for = self._executor
            self._warming = asyncio.gather(*(loop.run_in_executor(self._executor, _ready) for _ in range(max(1, self.workers))))
        await asyncio.shield(self._warming)

    async def run(self, fn, body: bytes, limits: Limits, timeout: Optional[float], *extra: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            try:
                await self.warm()  # a pool replaced after a timeout starts its workers outside the time limit
            except BrokenProcessPool:
                pass  # answered below
            executor = self._executor
            try:
                return await asyncio.wait_for(loop.run_in_executor(executor, fn, body, limits, *extra), timeout)
            except asyncio.TimeoutError:
                self._replace(executor, kill=True)  # the only way to stop a solver that ignores its time limit
                raise OverLimit(
                    f"the solver did not finish within this service's limit of {timeout:g} s per request; "
                    "run it as a background search instead: POST /v1/searches", 422,
                ) from None
            except (BrokenProcessPool, RuntimeError):  # a worker died (killed above, or out of memory), or the pool
                # was replaced meanwhile: retry once on fresh workers
                self._replace(executor, kill=False)
                if attempt == 2:
                    raise OverLimit("the solver process died on this problem (out of memory?)", 413) from None
        raise AssertionError("unreachable")

    def _replace(self, executor: Executor, kill: bool) -> None:
        """Swap in a fresh pool for ``executor`` (once, however many requests saw it fail)."""
        if self._executor is not executor or self.workers <= 0:
            return
        self._executor = self._new()
        if kill:
            for proc in list(getattr(executor, "_processes", {}).values()):
                proc.terminate()  # requests in flight on it get BrokenProcessPool and are retried
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
