"""Routes of stored plans: ``POST /v1/plans`` (solve now and store), ``GET /v1/plans/{id}``, ``GET /v1/plans``."""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from .answers import ErrorAnswer, PlanAnswer, PlanPage
from .columns import PLAN_COLUMNS, PROBLEM_COLUMNS, media_type, plan_columns_bytes, wants_columns
from .limits import ServiceConfig
from .payloads import PlanRequest
from .routing import ERRORS, body_spec, raw_json, server_timing, solved
from .solving import solve_plan, solve_plan_columns

#: the columnar answer of the plan routes (``Accept: application/vnd.mpq.plan-columns+npz``)
COLUMNS_ANSWER = {"content": {PLAN_COLUMNS: {"schema": {"type": "string", "format": "binary"}}},
                  "description": "with Accept: " + PLAN_COLUMNS + ", the plan as mpq.plan-columns/v1 (.npz)"}


def router(config: ServiceConfig, posting: Sequence[Any] = ()) -> APIRouter:
    """The plan routes under ``config``'s limits; ``posting``: dependencies of the POST."""
    limits = config.limits
    router = APIRouter()

    @router.post("/v1/plans", status_code=201, response_model=PlanAnswer, dependencies=list(posting), openapi_extra=body_spec(PlanRequest),
                 responses={**ERRORS, 201: COLUMNS_ANSWER}, summary="Solve a problem now, under a time limit, and store the plan")
    async def post_plan(
        request: Request,
        solver: str = Query("auto", max_length=64, description="with a columnar problem body: the solver"),
        options: str = Query("{}", max_length=4096, description="with a columnar problem body: the solver settings, a JSON object"),
    ):
        """The body is a plan request (JSON), or a columnar problem (Content-Type:
        application/vnd.mpq.problem-columns+npz) with the solver and its settings in the query."""
        as_columns = wants_columns(request.headers.get("accept", ""))
        if media_type(request.headers.get("content-type", "")) == PROBLEM_COLUMNS:
            (plan_id,), result, timing = await solved(request, config, solve_plan_columns, "plans", solver, options, as_columns)
        else:
            (plan_id,), result, timing = await solved(request, config, solve_plan, "plans", as_columns)
        headers = {"Server-Timing": server_timing(timing), "Location": f"/v1/plans/{plan_id}"}
        if as_columns:
            return Response(result["columns"], status_code=201, media_type=PLAN_COLUMNS, headers=headers)
        return raw_json(201, f'{{"id":"{plan_id}","plan":{result["records"][0].body}}}', headers)

    @router.get("/v1/plans/{plan_id}", response_model=PlanAnswer, responses={404: {"model": ErrorAnswer}, **ERRORS, 200: COLUMNS_ANSWER},
                summary="A stored plan (as columns with Accept: " + PLAN_COLUMNS + ")")
    async def get_plan(plan_id: str, request: Request):
        body = await run_in_threadpool(request.app.state.store.plan_body, plan_id)
        if body is None:
            raise HTTPException(404, f"no plan with id {plan_id!r}")
        if wants_columns(request.headers.get("accept", "")):
            return Response(await run_in_threadpool(plan_columns_bytes, body), media_type=PLAN_COLUMNS)
        return raw_json(200, json.dumps({"id": plan_id})[:-1] + f',"plan":{body}}}')

    @router.get("/v1/plans", response_model=PlanPage, responses=ERRORS, summary="Stored plans, newest first")
    async def list_plans(
        request: Request,
        fingerprint: Optional[str] = Query(None, max_length=256, description="only plans for this model fingerprint"),
        limit: int = Query(50, ge=1, le=limits.max_page),
        offset: int = Query(0, ge=0, le=2**62),
    ):
        total, items = await run_in_threadpool(request.app.state.store.list_plans, fingerprint, limit, offset)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    return router
