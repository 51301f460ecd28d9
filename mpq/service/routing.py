"""What the service's routers share: error answers, raw JSON answers, body reading and solving in a worker."""
from __future__ import annotations

import asyncio
import time
from typing import Optional

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from .answers import ErrorAnswer
from .limits import Limits, OverLimit, ServiceConfig

ERRORS = {
    401: {"model": ErrorAnswer, "description": "a bearer token is required"},
    413: {"model": ErrorAnswer, "description": "the request is over the service's limits"},
    415: {"model": ErrorAnswer, "description": "the body is not declared application/json"},
    408: {"model": ErrorAnswer, "description": "the body did not arrive within the service's time limit"},
    503: {"model": ErrorAnswer, "description": "too many requests in progress; retry after the Retry-After seconds"},
    422: {"model": ErrorAnswer, "description": "the request is invalid; the detail names the field or the reason"},
}


class Refusal(Exception):
    """An error answer computed in a worker process, sent back as it is."""

    def __init__(self, status: int, body: dict):
        self.status, self.body = status, body


def body_spec(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def raw_json(status: int, text: str, headers: Optional[dict] = None) -> Response:
    return Response(content=text, status_code=status, media_type="application/json", headers=headers)


def server_timing(timing: dict[str, float]) -> str:
    return ", ".join(f"{k};dur={v * 1000:.2f}" for k, v in timing.items())


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, refused with 413 as soon as it is over ``limits.max_body_bytes``, and with 408 when it
    does not arrive within ``limits.body_timeout_s`` (a slow or never-ending chunked body)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise OverLimit(f"body: {int(declared)} bytes is over this service's limit of {limits.max_body_bytes} bytes")
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise OverLimit(f"body: over this service's limit of {limits.max_body_bytes} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise OverLimit(f"body: not received within this service's limit of {limits.body_timeout_s:g} s", 408) from None
    return b"".join(chunks)



async def solved(request: Request, config: ServiceConfig, fn, source: str, *extra):
    """Run ``fn(body, limits, search_storage, *extra)`` in a worker, store the plans it made: (ids, the
    worker's answer, timing)."""
    limits = config.limits
    body = await read_body(request, limits)
    state = request.app.state
    result = await state.pool.run(fn, body, limits, limits.max_plan_seconds + limits.plan_grace_s, config.search_storage, *extra)
    if "error" in result:
        raise Refusal(*result["error"])
    t0 = time.perf_counter()
    ids = await state.writer.add(result["records"], source)  # group commit (mpq.service.writer)
    return ids, result, {**result["timing"], "store": time.perf_counter() - t0}
