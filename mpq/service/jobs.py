"""Background searches: a work queue in the database, each search run in its own process.

A server claims queued searches (an atomic update, so several servers can share one PostgreSQL
database), runs each in a spawned process, and writes its progress, best plan so far and
heartbeat back. Solvers whose constructor takes ``progress`` and ``should_stop`` get them; a
cancelled search is asked to stop, then terminated. A search whose server died (no heartbeat) is
put back in the queue up to ``max_restarts`` times, then marked failed with the reason.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import threading
import time
import uuid
from typing import Any, Optional

from .limits import ServiceConfig
from .store import PlanRecord, Store

log = logging.getLogger("mpq.service")

#: seconds a cancelled search has to stop by itself before its process is terminated
STOP_GRACE_S = 2.0


def run_search(problem_json: str, solver: str, options: dict, plugins: tuple[str, ...], parent: int, out, stop,
               search_storage: Optional[str] = None) -> None:
    """The body of a search process: solve, reporting ("progress", f, plan_json|None), then ("done", ...) or ("failed", msg)."""
    from .solving import exit_with_parent

    threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()
    try:
        from mpq.schema import Problem

        from .payloads import error_answer, make_solver
        from .solving import import_plugins

        import_plugins(plugins)
        problem = Problem.model_validate_json(problem_json)

        def progress(fraction: float, best=None) -> None:
            out.put(("progress", float(fraction), best.model_dump_json(by_alias=True) if best is not None else None))

        plan = make_solver(solver, options, search_storage, progress=progress, should_stop=stop.is_set).solve(problem)
        out.put(("done", plan.model_dump_json(by_alias=True)))
    except BaseException as e:  # noqa: BLE001 - everything is reported to the server
        try:
            out.put(("failed", error_answer(e)[1]["detail"]))
        except Exception:
            out.put(("failed", f"{type(e).__name__}: {e}"))


class SearchRunner:
    """Claims queued searches from the store and runs up to ``config.max_searches`` at once."""

    def __init__(self, store: Store, config: ServiceConfig):
        self.store, self.config = store, config
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._ctx = multiprocessing.get_context("spawn")
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        found = self.store.recover_orphans(self.config.stale_after_s, self.config.max_restarts)
        if found["requeued"] or found["failed"]:
            log.warning("searches left running by a stopped server: %d queued again, %d marked failed",
                        len(found["requeued"]), len(found["failed"]))
        self._thread = threading.Thread(target=self._dispatch, name="mpq-searches", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now (a search was added or cancelled)."""
        self._wake.set()

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for t in list(self._running.values()):
            t.join(timeout=STOP_GRACE_S + 3)

    # ------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        last_sweep = 0.0
        while not self._closing.is_set():
            try:
                now = time.monotonic()
                if now - last_sweep > self.config.stale_after_s / 2:
                    last_sweep = now
                    self.store.recover_orphans(self.config.stale_after_s, self.config.max_restarts)
                while len(self._running) < self.config.max_searches and not self._closing.is_set():
                    job = self.store.claim_next_search(self.owner)
                    if job is None:
                        break
                    t = threading.Thread(target=self._run, args=(job,), name=f"mpq-search-{job['id'][:8]}", daemon=True)
                    with self._lock:
                        self._running[job["id"]] = t
                    t.start()
            except Exception:  # the database may be briefly unavailable; try again on the next tick
                log.exception("search dispatcher")
            self._wake.wait(0.5)
            self._wake.clear()

    def _run(self, job: dict[str, Any]) -> None:
        sid = job["id"]
        try:
            self._supervise(sid, job)
        except Exception as e:
            log.exception("search %s", sid)
            self.store.finish_search(sid, self.owner, "failed", error=f"the server failed to run this search: {e}")
        finally:
            with self._lock:
                self._running.pop(sid, None)
            self._wake.set()

    def _supervise(self, sid: str, job: dict[str, Any]) -> None:
        out, stop = self._ctx.Queue(), self._ctx.Event()
        proc = self._ctx.Process(
            target=run_search, name=f"mpq-search-{sid[:8]}", daemon=True,
            args=(job["problem"], job["solver"], json.loads(job["options"]), self.config.plugins, os.getpid(), out, stop,
                  self.config.search_storage),
        )
        proc.start()
        progress: Optional[float] = None
        best: Optional[str] = None
        last_beat = 0.0
        stop_at: Optional[float] = None  # when asked to stop: terminate after the grace period
        result: Optional[tuple] = None
        limit = json.loads(job["options"]).get("time_limit_s")
        deadline = time.monotonic() + limit + 5 * STOP_GRACE_S if limit else None
        timed_out = False
        try:
            while result is None:
                try:
                    msg = out.get(timeout=0.2)
                except queue.Empty:
                    msg = None
                if msg is not None and msg[0] == "progress":
                    progress = msg[1]
                    best = msg[2] if msg[2] is not None else best
                elif msg is not None:
                    result = msg
                    break
                now = time.monotonic()
                if now - last_beat >= self.config.heartbeat_s or self._closing.is_set():
                    ours = self.store.beat(sid, self.owner, progress, best)
                    progress, best, last_beat = None, None, now
                    if not ours or self._closing.is_set():
                        if stop_at is None:
                            stop.set()
                            stop_at = now + STOP_GRACE_S
                if deadline is not None and now > deadline and stop_at is None:
                    timed_out = True
                    stop.set()
                    stop_at = now + STOP_GRACE_S
                if stop_at is not None and now > stop_at:
                    break
                if not proc.is_alive() and out.empty():
                    time.sleep(0.1)  # the queue's feeder may still be flushing the last message
                    if out.empty():
                        break
        finally:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)
        if progress is not None or best is not None:
            self.store.beat(sid, self.owner, progress, best)
        if self._closing.is_set() and (result is None or stop_at is not None):
            self.store.requeue(sid, self.owner, "the server shut down while this search was running; queued again")
            return
        if result is None:
            if timed_out:
                self.store.finish_search(sid, self.owner, "failed", error=f"the search ran past its time_limit_s={limit:g} and was stopped")
            elif stop_at is None:
                self.store.finish_search(sid, self.owner, "failed", error=f"the search process exited with code {proc.exitcode}")
            return  # otherwise cancelled: the store already says so
        if result[0] == "done":
            from mpq.schema import Plan

            record = PlanRecord.of(Plan.model_validate_json(result[1]))
            self.store.finish_search(sid, self.owner, "done", record=record)
        else:
            self.store.finish_search(sid, self.owner, "failed", error=result[1])
