"""Persistence for plans and searches: SQLite by default, any SQLAlchemy URL (PostgreSQL) when shared.

Every write is one transaction, so a crash leaves either the whole plan or none of it. Plans are
stored as their JSON document beside the columns used to filter them. Searches are a work queue:
a server claims a queued search by an atomic update, keeps a heartbeat while it runs, and a search
whose heartbeat stops (its server died) is put back in the queue or marked failed with the reason.
"""
from __future__ import annotations

import datetime as _dt
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import (
    BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text, create_engine, event, func, select, update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from mpq.dburl import with_installed_driver

metadata = MetaData()

plans = Table(
    "mpq_plans", metadata,
    Column("id", String(32), primary_key=True),
    Column("created", Float, nullable=False, index=True),
    Column("fingerprint", String(256), index=True),
    Column("model_name", String(512)),
    Column("solver", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("avg_bits", Float, nullable=False),
    Column("distortion", Float, nullable=False),
    Column("source", String(16), nullable=False),  # plans, frontier or search
    Column("body", Text, nullable=False),
)

searches = Table(
    "mpq_searches", metadata,
    Column("id", String(32), primary_key=True),
    Column("created", Float, nullable=False, index=True),
    Column("updated", Float, nullable=False),
    Column("status", String(16), nullable=False, index=True),  # queued running done failed cancelled
    Column("progress", Float, nullable=False, default=0.0),
    Column("solver", String(64), nullable=False),
    Column("options", Text, nullable=False),
    Column("problem", Text, nullable=False),
    Column("best", Text),  # the best plan so far (JSON), or null
    Column("plan_id", String(32)),  # the final plan, once done
    Column("error", Text),
    Column("restarts", Integer, nullable=False, default=0),
    Column("owner", String(64)),  # the server instance running it
    Column("heartbeat", Float),
    Index("ix_mpq_searches_status_created", "status", "created"),  # migration 0002
)

ACTIVE = ("queued", "running")


def iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class PlanRecord:
    """A plan about to be stored: its JSON and the columns it is listed by."""

    body: str
    fingerprint: Optional[str]
    model_name: Optional[str]
    solver: str
    status: str
    bytes: int
    avg_bits: float
    distortion: float

    @classmethod
    def of(cls, plan) -> "PlanRecord":
        model = plan.provenance.model
        return cls(
            body=plan.model_dump_json(by_alias=True), fingerprint=model.fingerprint if model else None,
            model_name=model.name if model else None, solver=plan.solver.name, status=plan.solver.status,
            bytes=plan.totals.bytes, avg_bits=plan.totals.avg_bits, distortion=plan.totals.distortion,
        )



def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30},
            **({"poolclass": StaticPool} if memory else {}),
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: readers never block the writer; NORMAL is crash-safe in WAL
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(with_installed_driver(url), pool_pre_ping=True)


class Store:
    """Plans and searches in one database; every method is one transaction."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        from .migrate import upgrade

        self.revision = upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # plans -------------------------------------------------------------------------------------
    def add_plans(self, records: list[PlanRecord], source: str = "plans") -> list[str]:
        return self.add_plan_groups([(records, source)])[0]

    def add_plan_groups(self, groups: list[tuple[list[PlanRecord], str]]) -> list[list[str]]:
        """Several requests' plans in one transaction (group commit): the ids of each group's plans."""
        now = time.time()
        rows = [[{"id": new_id(), "created": now, "source": source, **record.__dict__} for record in records]
                for records, source in groups]
        with self.engine.begin() as conn:
            conn.execute(plans.insert(), [r for group in rows for r in group])
        return [[r["id"] for r in group] for group in rows]

    def add_plan(self, record: PlanRecord, source: str = "plans") -> str:
        return self.add_plans([record], source)[0]

    def plan_body(self, plan_id: str) -> Optional[str]:
        with self.engine.connect() as conn:
            return conn.execute(select(plans.c.body).where(plans.c.id == plan_id)).scalar_one_or_none()

    def list_plans(self, fingerprint: Optional[str], limit: int, offset: int) -> tuple[int, list[dict]]:
        cols = [plans.c.id, plans.c.created, plans.c.fingerprint, plans.c.model_name, plans.c.solver,
                plans.c.status, plans.c.bytes, plans.c.avg_bits, plans.c.distortion, plans.c.source]
        where = [] if fingerprint is None else [plans.c.fingerprint == fingerprint]
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(plans).where(*where)).scalar_one()
            rows = conn.execute(
                select(*cols).where(*where).order_by(plans.c.created.desc(), plans.c.id).limit(limit).offset(offset)
            ).mappings().all()
        return total, [dict(r) | {"created": iso(r["created"])} for r in rows]

    # searches ----------------------------------------------------------------------------------
    def add_search(self, problem_json: str, solver: str, options: dict) -> str:
        now = time.time()
        sid = new_id()
        with self.engine.begin() as conn:
            conn.execute(searches.insert().values(
                id=sid, created=now, updated=now, status="queued", progress=0.0, solver=solver,
                options=json.dumps(options), problem=problem_json, restarts=0,
            ))
        return sid

    def list_searches(self, status: Optional[str], limit: int, offset: int) -> tuple[int, list[dict]]:
        """Searches newest first (without their problems or best plans), and how many there are in all."""
        cols = [searches.c.id, searches.c.created, searches.c.updated, searches.c.status, searches.c.progress,
                searches.c.solver, searches.c.plan_id, searches.c.error, searches.c.restarts]
        where = [] if status is None else [searches.c.status == status]
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(searches).where(*where)).scalar_one()
            rows = conn.execute(
                select(*cols).where(*where).order_by(searches.c.created.desc(), searches.c.id).limit(limit).offset(offset)
            ).mappings().all()
        return total, [dict(r) | {"created": iso(r["created"]), "updated": iso(r["updated"])} for r in rows]

    def search(self, search_id: str, with_problem: bool = False) -> Optional[dict[str, Any]]:
        cols = [c for c in searches.c if with_problem or c.name != "problem"]
        with self.engine.connect() as conn:
            row = conn.execute(select(*cols).where(searches.c.id == search_id)).mappings().one_or_none()
        return dict(row) if row is not None else None

    def claim_next_search(self, owner: str) -> Optional[dict[str, Any]]:
        """Atomically take the oldest queued search for ``owner``; None when the queue is empty."""
        while True:
            with self.engine.begin() as conn:
                sid = conn.execute(
                    select(searches.c.id).where(searches.c.status == "queued").order_by(searches.c.created).limit(1)
                ).scalar_one_or_none()
                if sid is None:
                    return None
                now = time.time()
                taken = conn.execute(
                    update(searches).where(searches.c.id == sid, searches.c.status == "queued")
                    .values(status="running", owner=owner, heartbeat=now, updated=now)
                ).rowcount
            if taken:
                return self.search(sid, with_problem=True)

    def beat(self, search_id: str, owner: str, progress: Optional[float] = None, best: Optional[str] = None) -> bool:
        """Record that ``owner`` still runs the search (and its progress); False once it was cancelled or taken."""
        now = time.time()
        values: dict[str, Any] = {"heartbeat": now, "updated": now}
        if progress is not None:
            values["progress"] = min(1.0, max(0.0, float(progress)))
        if best is not None:
            values["best"] = best
        with self.engine.begin() as conn:
            return bool(conn.execute(
                update(searches).where(searches.c.id == search_id, searches.c.status == "running", searches.c.owner == owner)
                .values(**values)
            ).rowcount)

    def finish_search(
        self, search_id: str, owner: str, status: str, record: Optional[PlanRecord] = None, error: Optional[str] = None,
    ) -> bool:
        """End a running search: with its plan (stored in the same transaction) or with the error."""
        now = time.time()
        values: dict[str, Any] = {"status": status, "updated": now, "error": error, "heartbeat": now}
        with self.engine.begin() as conn:
            if record is not None:
                pid = new_id()
                values.update(plan_id=pid, best=record.body, progress=1.0)
            result = conn.execute(
                update(searches).where(searches.c.id == search_id, searches.c.status == "running", searches.c.owner == owner)
                .values(**values)
            )
            if not result.rowcount:
                return False  # cancelled or taken over meanwhile: nothing was written
            if record is not None:
                conn.execute(plans.insert().values(id=pid, created=now, source="search", **record.__dict__))
        return True

    def requeue(self, search_id: str, owner: str, note: str) -> bool:
        """Give a running search back to the queue (this server is shutting down cleanly)."""
        with self.engine.begin() as conn:
            return bool(conn.execute(
                update(searches).where(searches.c.id == search_id, searches.c.status == "running", searches.c.owner == owner)
                .values(status="queued", owner=None, updated=time.time(), error=note)
            ).rowcount)

    def cancel_search(self, search_id: str) -> Optional[str]:
        """Cancel a queued or running search; returns its status afterwards (None for an unknown id)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(searches).where(searches.c.id == search_id, searches.c.status.in_(ACTIVE))
                .values(status="cancelled", updated=time.time(), error="cancelled by request")
            )
            return conn.execute(select(searches.c.status).where(searches.c.id == search_id)).scalar_one_or_none()

    def recover_orphans(self, stale_after_s: float, max_restarts: int) -> dict[str, list[str]]:
        """Searches marked running whose server went silent: back to the queue, or failed when restarted enough."""
        now = time.time()
        out: dict[str, list[str]] = {"requeued": [], "failed": []}
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(searches.c.id, searches.c.restarts, searches.c.progress, searches.c.heartbeat).where(
                    searches.c.status == "running",
                    (searches.c.heartbeat.is_(None)) | (searches.c.heartbeat < now - stale_after_s),
                )
            ).all()
            for sid, restarts, progress, beat in rows:
                cond = (searches.c.id == sid, searches.c.status == "running")
                when = iso(beat) if beat else "an unknown time"
                if restarts < max_restarts:
                    conn.execute(update(searches).where(*cond).values(
                        status="queued", owner=None, restarts=restarts + 1, updated=now,
                        error=f"the server running this search stopped at {when} (progress {progress:.0%}); restarted",
                    ))
                    out["requeued"].append(sid)
                else:
                    conn.execute(update(searches).where(*cond).values(
                        status="failed", updated=now,
                        error=(f"the server running this search stopped at {when} (progress {progress:.0%}) "
                               f"after {restarts} restart(s); not restarted again — submit it anew"),
                    ))
                    out["failed"].append(sid)
        return out
