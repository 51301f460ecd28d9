"""Routes of background searches: ``POST /v1/searches``, ``GET`` and ``DELETE /v1/searches/{id}``."""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mpq.errors import MpqError

from .answers import ErrorAnswer, SearchAccepted, SearchPage, SearchState
from .limits import ServiceConfig
from .payloads import SearchRequest, error_answer, make_solver, parse_body
from .routing import ERRORS, Refusal, body_spec, read_body
from .store import Store, iso


def router(config: ServiceConfig, posting: Sequence[Any] = ()) -> APIRouter:
    """The search routes under ``config``'s limits and search storage; ``posting``: dependencies of the POST."""
    limits = config.limits
    router = APIRouter()

    def _accept_search(body: bytes) -> tuple[str, str, dict]:
        req = parse_body(body, SearchRequest)
        limits.check_problem(req.problem)
        limits.check_options(req.options)
        seconds = limits.time_limit(req.options, limits.max_search_seconds, None)
        options = {**req.options, **({"time_limit_s": seconds} if seconds is not None else {})}
        make_solver(req.solver, options, config.search_storage)  # an unknown solver or refused setting is answered now, not in the queue
        return req.problem.model_dump_json(by_alias=True, exclude_unset=True), req.solver, options

    @router.post("/v1/searches", status_code=202, response_model=SearchAccepted, dependencies=list(posting),
                 openapi_extra=body_spec(SearchRequest), responses=ERRORS, summary="Start a long search in the background")
    async def post_search(request: Request):
        body = await read_body(request, limits)
        try:
            problem, solver, options = await run_in_threadpool(_accept_search, body)
        except (MpqError, HTTPException):
            raise
        except Exception as e:  # answered like a plan request's failure: a 422 naming it, never a 500
            raise Refusal(*error_answer(e)) from None
        state = request.app.state
        sid = await run_in_threadpool(state.store.add_search, problem, solver, options)
        state.runner.wake()
        return JSONResponse({"id": sid, "status": "queued"}, status_code=202, headers={"Location": f"/v1/searches/{sid}"})

    @router.get("/v1/searches", response_model=SearchPage, responses=ERRORS, summary="Searches, newest first")
    async def list_searches(
        request: Request,
        status: Optional[str] = Query(None, pattern="^(queued|running|done|failed|cancelled)$", description="only searches in this state"),
        limit: int = Query(50, ge=1, le=limits.max_page),
        offset: int = Query(0, ge=0, le=2**62),
    ):
        total, items = await run_in_threadpool(request.app.state.store.list_searches, status, limit, offset)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    def _search_state(store: Store, search_id: str) -> dict:
        row = store.search(search_id)
        if row is None:
            raise HTTPException(404, f"no search with id {search_id!r}")
        return {
            "id": row["id"], "status": row["status"], "progress": row["progress"],
            "best": json.loads(row["best"]) if row["best"] else None, "plan_id": row["plan_id"], "error": row["error"],
            "solver": row["solver"], "restarts": row["restarts"], "created": iso(row["created"]), "updated": iso(row["updated"]),
        }

    @router.get("/v1/searches/{search_id}", response_model=SearchState,
                responses={404: {"model": ErrorAnswer}, **ERRORS}, summary="Status, progress and best plan of a search")
    async def get_search(search_id: str, request: Request):
        return JSONResponse(await run_in_threadpool(_search_state, request.app.state.store, search_id))

    @router.delete("/v1/searches/{search_id}", response_model=SearchState,
                   responses={404: {"model": ErrorAnswer}, 409: {"model": ErrorAnswer}, **ERRORS}, summary="Cancel a search")
    async def cancel_search(search_id: str, request: Request):
        state = request.app.state
        before = await run_in_threadpool(state.store.search, search_id)
        if before is None:
            raise HTTPException(404, f"no search with id {search_id!r}")
        if before["status"] not in ("queued", "running"):
            raise HTTPException(409, f"search {search_id!r} is already {before['status']}")
        after = await run_in_threadpool(state.store.cancel_search, search_id)
        if after != "cancelled":  # it finished meanwhile
            raise HTTPException(409, f"search {search_id!r} is already {after}")
        state.runner.wake()
        return JSONResponse(await run_in_threadpool(_search_state, state.store, search_id))

    return router
