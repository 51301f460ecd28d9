"""Plans written in batches (group commit): one transaction for every plan that arrived meanwhile.

Under load, requests finish while the previous write is still committing; the next transaction
takes all of them, so the database commits once for many plans instead of once per plan. Each
request is answered only after the commit that holds its plan: durability is the store's own (an
acknowledged plan is in the database), only the number of transactions changes.
"""
from __future__ import annotations

import asyncio
from typing import Optional

from starlette.concurrency import run_in_threadpool

from .store import PlanRecord, Store


class PlanWriter:
    """Adds plans to ``store`` from the event loop, batching the requests that wait on one write."""

    def __init__(self, store: Store, max_batch: int = 256):
        self.store, self.max_batch = store, max_batch
        self._pending: list[tuple[list[PlanRecord], str, asyncio.Future]] = []
        self._task: Optional[asyncio.Task] = None

    async def add(self, records: list[PlanRecord], source: str) -> list[str]:
        """The ids of ``records``, once they are committed."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((records, source, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            try:
                ids = await run_in_threadpool(self.store.add_plan_groups, [(records, source) for records, source, _ in batch])
            except BaseException as e:  # every waiting request gets the error, none waits forever
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                if not isinstance(e, Exception):
                    raise
                continue
            for (_, _, future), group in zip(batch, ids):
                if not future.done():
                    future.set_result(group)
