"""Routes of the registries: ``GET /v1/solvers`` and ``GET /v1/estimators`` (the same listings as the CLI's)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from .limits import ServiceConfig
from .routing import ERRORS


def router(config: ServiceConfig, posting=()) -> APIRouter:
    """The registry routes."""
    router = APIRouter()

    @router.get("/v1/solvers", responses=ERRORS, summary="Registered solvers")
    async def list_solvers() -> dict:
        def solvers():
            from mpq.solvers.base import solver_listing

            return {"solvers": solver_listing()}

        return await run_in_threadpool(solvers)

    @router.get("/v1/estimators", responses=ERRORS, summary="Registered sensitivity estimators")
    async def list_estimators() -> dict:
        def estimators():
            from mpq.sensitivity.base import estimator_listing

            return {"estimators": estimator_listing()}

        return await run_in_threadpool(estimators)

    return router
