"""The HTTP API (v1): plans, frontiers and background searches over mpq's solvers.

``create_app(config)`` builds the FastAPI app: its lifespan, authentication, guard and error
answers, and one router per resource (:mod:`.plans`, :mod:`.frontiers`, :mod:`.searches`,
:mod:`.registries`). Each route is one call into the Python API; the
payloads are mpq's versioned documents (mpq/schema.py). Heavy work (validating a problem, solving it) runs in worker
processes, so the event loop only moves bytes; results are stored before they are answered.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Optional

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from mpq import __version__
from mpq.errors import MpqError

from . import frontiers, plans, registries, searches
from .guard import RequestGuard, is_loopback
from .jobs import SearchRunner
from .limits import OverLimit, ServiceConfig
from .payloads import FrontierRequest, PlanRequest, SearchRequest, error_answer
from .routing import ERRORS, Refusal, read_body  # noqa: F401 (read_body: imported from here by callers)
from .solving import SolvePool, import_plugins
from .store import Store
from .writer import PlanWriter

log = logging.getLogger("mpq.service")


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

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import_plugins(config.plugins)  # here too: searches are validated in this process
        store = Store(config.db_url)
        pool = SolvePool(config.solve_workers, config.plugins)
        runner = SearchRunner(store, config)
        app.state.store, app.state.pool, app.state.runner = store, pool, runner
        app.state.writer = PlanWriter(store)
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
    busy = asyncio.Semaphore(config.limits.max_concurrent)

    async def one_at_a_slot():
        """At most ``limits.max_concurrent`` POSTs read or solve at once; one more is told to retry, not buffered."""
        if busy.locked():
            raise OverLimit(f"the service is busy: {config.limits.max_concurrent} requests are in progress; retry shortly", 503)
        async with busy:
            yield

    guarded = [Depends(require_token)] if config.token is not None else []
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

    # routes, by resource --------------------------------------------------------------------
    for resource in (plans, frontiers, searches, registries):
        app.include_router(resource.router(config, posting=[Depends(one_at_a_slot)]), dependencies=guarded)

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
