"""A Python client for the mpq search service (``mpq serve``): one method per endpoint.

    from mpq.client import Client
    client = Client("http://127.0.0.1:8000", token=None)
    plan = client.solve(problem, time_limit_s=10)          # an mpq.schema.Plan
    points = client.frontier(problem)                      # [FrontierPoint(bytes, distortion, plan_id)]

Errors the service answers become mpq errors: an infeasible budget raises ``PlanInfeasible`` with
the smallest feasible budgets, anything else ``ServiceError`` with the status and the detail.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Optional, Union

from mpq.extras import require

httpx = require("httpx", "the mpq HTTP client (mpq.client)")

from mpq.errors import MpqError, PlanInfeasible
from mpq.schema import Plan, Problem
from mpq.service.answers import FrontierAnswer, FrontierPoint, PlanAnswer, PlanPage, PlanSummary, SearchPage, SearchState, SearchSummary

ProblemLike = Union[Problem, dict]


class ServiceError(MpqError):
    """The service refused a request (``status``, ``detail``) or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: Optional[int] = None, detail: Any = None):
        self.status, self.detail = status, detail
        super().__init__(message)


def _problem_json(problem: ProblemLike) -> dict:
    if isinstance(problem, Problem):
        return problem.model_dump(mode="json", by_alias=True)
    return problem


#: Methods that may be sent again after a connection failure or a 502/503/504: they change nothing twice.
IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
RETRY_STATUS = (502, 503, 504)


class Client:
    """Talks to one service at ``url``; ``token`` (default ``$MPQ_TOKEN``) is sent as ``Authorization: Bearer``.

    Idempotent calls (GET, DELETE) are retried up to ``retries`` times on a connection failure or a
    502/503/504 answer, waiting ``backoff_s`` x 2^attempt (or the server's ``Retry-After``); a POST is
    sent once, since a lost answer may still have created a plan or a search.
    """

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 120.0, retries: int = 3, backoff_s: float = 0.2):
        import os

        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("MPQ_TOKEN") or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries, self.backoff_s = max(0, int(retries)), float(backoff_s)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs) -> "httpx.Response":
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                r = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if last:
                    raise ServiceError(f"cannot reach the mpq service at {self.url}: {e}") from None
                time.sleep(self.backoff_s * 2**attempt)
                continue
            except httpx.HTTPError as e:
                raise ServiceError(f"cannot reach the mpq service at {self.url}: {e}") from None
            if r.status_code in RETRY_STATUS and not last:
                wait = r.headers.get("retry-after", "")
                time.sleep(min(float(wait), 30.0) if wait.replace(".", "", 1).isdigit() else self.backoff_s * 2**attempt)
                continue
            return r
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, **kwargs) -> Any:
        r = self._send(method, path, **kwargs)
        if r.status_code < 400:
            return r.json()
        try:
            body = r.json()
        except ValueError:
            body = {"detail": r.text}
        detail = body.get("detail", body) if isinstance(body, dict) else body
        if r.status_code == 422 and isinstance(body, dict) and "minimum" in body:
            raise PlanInfeasible(str(detail), body["minimum"])
        raise ServiceError(f"the mpq service answered {r.status_code}: {detail}", r.status_code, detail)

    # plans -------------------------------------------------------------------------------------
    def create_plan(self, problem: ProblemLike, solver: str = "auto", options: Optional[dict] = None) -> PlanAnswer:
        """``POST /v1/plans``: solve now and store; the answer has the plan's ``id`` and the ``plan``."""
        body = {"problem": _problem_json(problem), "solver": solver, "options": dict(options or {})}
        return PlanAnswer.model_validate(self._call("POST", "/v1/plans", json=body))

    def solve(self, problem: ProblemLike, solver: str = "auto", **options: Any) -> Plan:
        """The plan for ``problem`` (solver settings as keywords, e.g. ``time_limit_s=10``)."""
        return self.create_plan(problem, solver, {k: v for k, v in options.items() if v is not None}).plan

    def get_plan(self, plan_id: str) -> Plan:
        return PlanAnswer.model_validate(self._call("GET", f"/v1/plans/{plan_id}")).plan

    def list_plans(self, fingerprint: Optional[str] = None, limit: int = 50, offset: int = 0) -> PlanPage:
        params = {"limit": limit, "offset": offset, **({"fingerprint": fingerprint} if fingerprint else {})}
        return PlanPage.model_validate(self._call("GET", "/v1/plans", params=params))

    def iter_plans(self, fingerprint: Optional[str] = None, page_size: int = 100) -> Iterator[PlanSummary]:
        """Every stored plan (summaries, newest first), fetched a page at a time."""
        offset = 0
        while True:
            page = self.list_plans(fingerprint, limit=page_size, offset=offset)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def frontier(self, problem: ProblemLike, max_points: Optional[int] = None) -> list[FrontierPoint]:
        """``POST /v1/frontiers``: Pareto points, smallest first; each ``plan_id`` is a stored plan (``get_plan``)."""
        body: dict[str, Any] = {"problem": _problem_json(problem)}
        if max_points is not None:
            body["max_points"] = max_points
        return FrontierAnswer.model_validate(self._call("POST", "/v1/frontiers", json=body)).points

    # searches ----------------------------------------------------------------------------------
    def start_search(self, problem: ProblemLike, solver: str = "auto", **options: Any) -> str:
        """``POST /v1/searches``: the id of a background search (options pass to the solver, e.g. trials; a study lives in the server's --search-storage)."""
        body = {"problem": _problem_json(problem), "solver": solver, "options": options}
        return self._call("POST", "/v1/searches", json=body)["id"]

    def search(self, search_id: str) -> SearchState:
        return SearchState.model_validate(self._call("GET", f"/v1/searches/{search_id}"))

    def list_searches(self, status: Optional[str] = None, limit: int = 50, offset: int = 0) -> SearchPage:
        """``GET /v1/searches``: one page of searches, newest first (``status`` filters: queued, running, done, ...)."""
        params = {"limit": limit, "offset": offset, **({"status": status} if status else {})}
        return SearchPage.model_validate(self._call("GET", "/v1/searches", params=params))

    def iter_searches(self, status: Optional[str] = None, page_size: int = 100) -> Iterator[SearchSummary]:
        """Every search (newest first), fetched a page at a time."""
        offset = 0
        while True:
            page = self.list_searches(status, limit=page_size, offset=offset)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def cancel_search(self, search_id: str) -> SearchState:
        return SearchState.model_validate(self._call("DELETE", f"/v1/searches/{search_id}"))

    def wait_search(self, search_id: str, timeout: float = 3600.0, poll_s: float = 0.5) -> SearchState:
        """Poll until the search is done, failed or cancelled (or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.search(search_id)
            if state.status in ("done", "failed", "cancelled") or time.monotonic() > deadline:
                return state
            time.sleep(poll_s)

    # registries --------------------------------------------------------------------------------
    def solvers(self) -> list[dict]:
        return self._call("GET", "/v1/solvers")["solvers"]

    def estimators(self) -> list[dict]:
        return self._call("GET", "/v1/estimators")["estimators"]

    def health(self) -> dict:
        return self._call("GET", "/healthz")
