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
from typing import Any, Optional, Union

from mpq.extras import require

httpx = require("httpx", "the mpq HTTP client (mpq.client)")

from mpq.errors import MpqError, PlanInfeasible
from mpq.schema import Plan, Problem
from mpq.service.answers import FrontierAnswer, FrontierPoint, PlanAnswer, PlanPage, SearchState

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


class Client:
    """Talks to one service at ``url``; ``token`` is sent as ``Authorization: Bearer``."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ServiceError(f"cannot reach the mpq service at {self.url}: {e}") from None
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
