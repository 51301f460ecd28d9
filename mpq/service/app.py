"""The HTTP API (v1): plans, frontiers and background searches over mpq's solvers.

``create_app(config)`` builds the FastAPI app. Each route is one call into the Python API; the
payloads are mpq's versioned documents (mpq/schema.py). Heavy work (validating a problem, solving it) runs in worker
processes, so the event loop only moves bytes; results are stored before they are answered.
"""
from __future__ import annotations

import asyncio
import hmac
import json
from http import HTTPStatus
import logging
import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from mpq import __version__
from mpq.errors import MpqError

from .answers import ErrorAnswer, FrontierAnswer, PlanAnswer, PlanPage, SearchAccepted, SearchPage, SearchState
from .guard import RequestGuard, is_loopback
from .jobs import SearchRunner
from .limits import Limits, OverLimit, ServiceConfig
from .payloads import FrontierRequest, PlanRequest, SearchRequest, error_answer, make_solver, parse_body
from .solving import SolvePool, import_plugins, solve_frontier, solve_plan
from .store import Store, iso

log = logging.getLogger("mpq.service")

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


def _body_spec(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _raw_json(status: int, text: str, headers: Optional[dict] = None) -> Response:
    return Response(content=text, status_code=status, media_type="application/json", headers=headers)


def _server_timing(timing: dict[str, float]) -> str:
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


PROBLEM_JSON = "application/problem+json"


class ProblemDetails:
    """Every error answer as RFC 9457 problem JSON: ``type``, ``title``, ``status`` beside the ``detail``
    (and any other fields, such as ``minimum``) that the handlers wrote, served as ``application/problem+json``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict = {}

        async def send_problem(message):
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    held["start"], held["body"] = message, b""
                    return
                return await send(message)
            if message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                start = held.pop("start")
                status = start["status"]
                try:
                    doc = json.loads(held["body"] or b"{}")
                except ValueError:
                    doc = {"detail": held["body"].decode("utf-8", "replace")}
                if not isinstance(doc, dict):
                    doc = {"detail": doc}
                phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
                body = json.dumps({"type": "about:blank", "title": phrase, "status": status, **doc}).encode()
                headers = [(k, v) for k, v in start.get("headers", []) if k not in (b"content-type", b"content-length")]
                headers += [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
                await send({**start, "headers": headers})
                return await send({"type": "http.response.body", "body": body})
            return await send(message)

        await self.app(scope, receive, send_problem)


def create_app(config: Optional[ServiceConfig] = None) -> FastAPI:
    """The service: stores in ``config.db_url``, requires ``config.token`` when set."""
    config = config or ServiceConfig()
    limits = config.limits

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import_plugins(config.plugins)  # here too: searches are validated in this process
        store = Store(config.db_url)
        pool = SolvePool(config.solve_workers, config.plugins)
        runner = SearchRunner(store, config)
        app.state.store, app.state.pool, app.state.runner = store, pool, runner
        try:
            await pool.warm()
            runner.start()
            yield
        finally:
            runner.close()
            pool.close()
            store.close()

    bearer = HTTPBearer(auto_error=False, description="required when the server was started with a token")

    async def require_token(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if config.token is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), config.token.encode()):
            raise HTTPException(401, "a valid 'Authorization: Bearer <token>' header is required", {"WWW-Authenticate": "Bearer"})

    app = FastAPI(
        title="mpq search service", version=__version__, lifespan=lifespan,
        description="Mixed-precision plans, frontiers and long searches over mpq's solvers. Payloads are mpq's "
                    "versioned documents (mpq.problem/v1, mpq.plan/v1).",
    )
    busy = asyncio.Semaphore(limits.max_concurrent)

    async def one_at_a_slot():
        """At most ``limits.max_concurrent`` POSTs read or solve at once; one more is told to retry, not buffered."""
        if busy.locked():
            raise OverLimit(f"the service is busy: {limits.max_concurrent} requests are in progress; retry shortly", 503)
        async with busy:
            yield

    guarded = [Depends(require_token)] if config.token is not None else []
    posting = [*guarded, Depends(one_at_a_slot)]
    app.add_middleware(RequestGuard, loopback=is_loopback(config.host), port=config.port)
    app.add_middleware(ProblemDetails)

    # errors -----------------------------------------------------------------------------------
    @app.exception_handler(MpqError)
    async def _mpq_error(request: Request, exc: MpqError):
        status, body = error_answer(exc)
        return JSONResponse(body, status_code=status, headers={"Retry-After": "1"} if status == 503 else None)

    @app.exception_handler(Refusal)
    async def _refused(request: Request, exc: Refusal):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError):
        log.error("database error", exc_info=exc)
        return JSONResponse({"detail": "the service's database is unavailable; try again"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    # plans ------------------------------------------------------------------------------------
    async def _solved(request: Request, fn, source: str):
        """Run ``fn`` on the body in a worker, store the plans it made: (ids, records, timing)."""
        body = await read_body(request, limits)
        state = request.app.state
        result = await state.pool.run(fn, body, limits, limits.max_plan_seconds + limits.plan_grace_s, config.search_storage)
        if "error" in result:
            raise Refusal(*result["error"])
        t0 = time.perf_counter()
        ids = await run_in_threadpool(state.store.add_plans, result["records"], source)
        return ids, result["records"], {**result["timing"], "store": time.perf_counter() - t0}

    @app.post("/v1/plans", status_code=201, response_model=PlanAnswer, dependencies=posting, openapi_extra=_body_spec(PlanRequest),
              responses=ERRORS, summary="Solve a problem now, under a time limit, and store the plan")
    async def post_plan(request: Request):
        (plan_id,), (record,), timing = await _solved(request, solve_plan, "plans")
        return _raw_json(201, f'{{"id":"{plan_id}","plan":{record.body}}}',
                         {"Server-Timing": _server_timing(timing), "Location": f"/v1/plans/{plan_id}"})

    @app.get("/v1/plans/{plan_id}", response_model=PlanAnswer, dependencies=guarded, responses={404: {"model": ErrorAnswer}, **ERRORS},
             summary="A stored plan")
    async def get_plan(plan_id: str, request: Request):
        body = await run_in_threadpool(request.app.state.store.plan_body, plan_id)
        if body is None:
            raise HTTPException(404, f"no plan with id {plan_id!r}")
        return _raw_json(200, json.dumps({"id": plan_id})[:-1] + f',"plan":{body}}}')

    @app.get("/v1/plans", response_model=PlanPage, dependencies=guarded, responses=ERRORS, summary="Stored plans, newest first")
    async def list_plans(
        request: Request,
        fingerprint: Optional[str] = Query(None, max_length=256, description="only plans for this model fingerprint"),
        limit: int = Query(50, ge=1, le=limits.max_page),
        offset: int = Query(0, ge=0, le=2**62),
    ):
        total, items = await run_in_threadpool(request.app.state.store.list_plans, fingerprint, limit, offset)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @app.post("/v1/frontiers", response_model=FrontierAnswer, dependencies=posting, openapi_extra=_body_spec(FrontierRequest),
              responses=ERRORS, summary="The size/distortion frontier under the problem's budget; each point is a stored plan")
    async def post_frontier(request: Request):
        ids, records, timing = await _solved(request, solve_frontier, "frontier")
        points = [{"bytes": r.bytes, "distortion": r.distortion, "plan_id": i} for i, r in zip(ids, records)]
        return JSONResponse({"points": points}, headers={"Server-Timing": _server_timing(timing)})

    # searches ---------------------------------------------------------------------------------
    def _accept_search(body: bytes) -> tuple[str, str, dict]:
        req = parse_body(body, SearchRequest)
        limits.check_problem(req.problem)
        limits.check_options(req.options)
        seconds = limits.time_limit(req.options, limits.max_search_seconds, None)
        options = {**req.options, **({"time_limit_s": seconds} if seconds is not None else {})}
        make_solver(req.solver, options, config.search_storage)  # an unknown solver or refused setting is answered now, not in the queue
        return req.problem.model_dump_json(by_alias=True, exclude_unset=True), req.solver, options

    @app.post("/v1/searches", status_code=202, response_model=SearchAccepted, dependencies=posting,
              openapi_extra=_body_spec(SearchRequest), responses=ERRORS, summary="Start a long search in the background")
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

    @app.get("/v1/searches", response_model=SearchPage, dependencies=guarded, responses=ERRORS, summary="Searches, newest first")
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

    @app.get("/v1/searches/{search_id}", response_model=SearchState, dependencies=guarded,
             responses={404: {"model": ErrorAnswer}, **ERRORS}, summary="Status, progress and best plan of a search")
    async def get_search(search_id: str, request: Request):
        return JSONResponse(await run_in_threadpool(_search_state, request.app.state.store, search_id))

    @app.delete("/v1/searches/{search_id}", response_model=SearchState, dependencies=guarded,
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

    # registries and health --------------------------------------------------------------------
    @app.get("/v1/solvers", dependencies=guarded, responses=ERRORS, summary="Registered solvers")
    async def list_solvers() -> dict:
        def solvers():
            from mpq.solvers.base import solver_listing

            return {"solvers": solver_listing()}

        return await run_in_threadpool(solvers)

    @app.get("/v1/estimators", dependencies=guarded, responses=ERRORS, summary="Registered sensitivity estimators")
    async def list_estimators() -> dict:
        def estimators():
            from mpq.sensitivity.base import estimator_listing

            return {"estimators": estimator_listing()}

        return await run_in_threadpool(estimators)

    @app.get("/healthz", summary="Liveness: the server answers and its database is reachable")
    async def healthz(request: Request) -> dict:
        def ping() -> None:
            from sqlalchemy import text

            with request.app.state.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        await run_in_threadpool(ping)
        return {"status": "ok", "version": __version__}

    # OpenAPI: the routes read raw bodies (validated by mpq.schema), so their schemas are added here
    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PlanRequest, SearchRequest, FrontierRequest):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
