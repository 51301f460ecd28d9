"""The JSON answers of the v1 API, as pydantic models: documented in OpenAPI, read back by the client."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field

from mpq.schema import Plan


class PlanAnswer(BaseModel):
    id: str
    plan: Plan


class PlanSummary(BaseModel):
    id: str
    created: str
    fingerprint: Optional[str] = None
    model_name: Optional[str] = None
    solver: str
    status: str
    bytes: int
    avg_bits: float
    distortion: float
    source: str = Field(description="plans, frontier or search: which request produced it")


class PlanPage(BaseModel):
    items: list[PlanSummary]
    total: int
    limit: int
    offset: int


class FrontierPoint(BaseModel):
    bytes: int
    distortion: float
    plan_id: str


class FrontierAnswer(BaseModel):
    points: list[FrontierPoint]


class SearchAccepted(BaseModel):
    id: str
    status: str


class SearchSummary(BaseModel):
    id: str
    status: str
    progress: float
    solver: str
    plan_id: Optional[str] = None
    error: Optional[str] = None
    restarts: int
    created: str
    updated: str


class SearchPage(BaseModel):
    items: list[SearchSummary]
    total: int
    limit: int
    offset: int


class SearchState(BaseModel):
    id: str
    status: str = Field(description="queued, running, done, failed or cancelled")
    progress: float = Field(ge=0, le=1)
    best: Optional[Plan] = Field(None, description="the best plan so far (the final plan once done)")
    plan_id: Optional[str] = Field(None, description="id of the final plan in /v1/plans, once done")
    error: Optional[str] = None
    solver: str
    restarts: int = Field(description="times the search was restarted because its server stopped")
    created: str
    updated: str


class ErrorAnswer(BaseModel):
    detail: Any
