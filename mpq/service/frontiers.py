"""Route of frontiers: ``POST /v1/frontiers``, each point a stored plan."""
from __future__ import annotations

from typing import Any, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .answers import FrontierAnswer
from .limits import ServiceConfig
from .payloads import FrontierRequest
from .routing import ERRORS, body_spec, server_timing, solved
from .solving import solve_frontier


def router(config: ServiceConfig, posting: Sequence[Any] = ()) -> APIRouter:
    """The frontier route under ``config``'s limits; ``posting``: dependencies of the POST."""
    router = APIRouter()

    @router.post("/v1/frontiers", response_model=FrontierAnswer, dependencies=list(posting), openapi_extra=body_spec(FrontierRequest),
                 responses=ERRORS, summary="The size/distortion frontier under the problem's budget; each point is a stored plan")
    async def post_frontier(request: Request):
        ids, result, timing = await solved(request, config, solve_frontier, "frontier")
        points = [{"bytes": r.bytes, "distortion": r.distortion, "plan_id": i} for i, r in zip(ids, result["records"])]
        return JSONResponse({"points": points}, headers={"Server-Timing": server_timing(timing)})

    return router
