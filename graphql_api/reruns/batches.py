"""Batch mode: a BATCH rerun job's model requests go through the Gemini Batch API, at the batch price.

A runner in every process that runs workers (any number of them share the work through the database):
1. takes a BATCH job's pending items in chunks of `max_requests`, one provider batch per chunk (rerun_batches,
   migration 013), its items RUNNING and leased to the batch;
2. submits the batch (a batch whose runner died mid-submit is first looked for by its display name, so a crash
   never pays twice), then polls it every `poll_s`;
3. when the batch is done, records each result exactly as an interactive worker does (finish_rerun_item: the
   result, its charge at the batch price, the job's counters and a progress event per item); requests the batch
   did not answer fail (FAILED, retryable with retryRerun, no charge), or are canceled when the job is being
   canceled; a job being canceled has its batches canceled at the provider.
Each batch row is one unit of work, held by one runner at a time under a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from graphql_api.analysis.base import AnalysisError, BatchRequest, BatchResult, BatchState
from graphql_api.analysis.config import effective_config
from graphql_api.analysis.offline import analyze_offline
from graphql_api.analyses import failure_columns, outcome_columns
from graphql_api.conversations import conversation_for_analysis
from graphql_api.db import Database
from graphql_api.reruns.worker import narrowed

log = structlog.stdlib.get_logger(__name__)

# Provider states after which a batch changes no more.
DONE_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})


class BatchClient(Protocol):
    """What the runner needs of a batch provider (graphql_api.analysis.batch.GeminiBatchClient, or offline)."""

    async def submit(self, requests: list[BatchRequest], *, display_name: str) -> str: ...

    async def state(self, name: str) -> BatchState: ...

    async def results(self, name: str, requests: list[BatchRequest]) -> list[BatchResult]: ...

    async def cancel(self, name: str) -> None: ...

    async def find(self, display_name: str) -> str | None: ...

    async def aclose(self) -> None: ...


class OfflineBatchClient:
    """Batch mode without a Gemini key: every batch is done as soon as it is submitted, with the offline analyzer's
    results (which cost nothing). Nothing is kept between calls: results are computed from the requests."""

    async def submit(self, requests: list[BatchRequest], *, display_name: str) -> str:
        return f"offline-batches/{display_name}"

    async def state(self, name: str) -> BatchState:
        return BatchState(name=name, state="SUCCEEDED", done=True, error=None)

    async def results(self, name: str, requests: list[BatchRequest]) -> list[BatchResult]:
        return [BatchResult(key=r.key, outcome=analyze_offline(r.conversation, r.config), error=None) for r in requests]

    async def cancel(self, name: str) -> None:
        return None

    async def find(self, display_name: str) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


@dataclass
class BatchStats:
    created: int = 0
    submitted: int = 0
    recorded: int = 0
    items_recorded: int = 0


class BatchRunner:
    def __init__(
        self,
        *,
        db: Database,
        client: BatchClient,
        max_requests: int = 500,
        poll_s: float = 30.0,
        lease_s: float = 300.0,
        tick_s: float | None = None,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.max_requests = max_requests
        self.poll_s = poll_s
        self.lease_s = lease_s
        # Idle, it looks every poll_s (a batch is due no sooner); a new job wakes it at once (rerun_queued).
        self.tick_s = poll_s if tick_s is None else min(tick_s, poll_s)
        self.owner = owner or f"batches:{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:04x}"
        self.stats = BatchStats()
        self._wake = asyncio.Event()
        self._stopping = False
        self._configs: dict[str, Any] = {}

    def wake(self) -> None:
        """A job may have been queued: look now rather than at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info("batch_runner_started", owner=self.owner, poll_s=self.poll_s, max_requests=self.max_requests)
        while not self._stopping:
            try:
                busy = await self.step()
            except Exception as exc:  # the database may be restarting: the leases hold the work meanwhile
                log.warning("batch_runner_step_failed", owner=self.owner, error=type(exc).__name__, detail=str(exc)[:200])
                busy = False
            if busy:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick_s)
        log.info("batch_runner_stopped", owner=self.owner, **self.stats.__dict__)

    async def step(self) -> bool:
        """One round: new batches for waiting jobs, then one step of each due batch. True when it did something."""
        created = await self._create_batches()
        due = await self.db.fetch_all("batch_claim_due", owner=self.owner, lease_s=self.lease_s, limit=8)
        for batch in due:
            await self._advance(batch)
        return bool(created or due)

    # ---- new batches -------------------------------------------------------------------------

    async def _create_batches(self) -> int:
        created = 0
        for job in await self.db.fetch_all("batch_jobs_waiting", limit=4):
            async with self.db.transaction():
                if await self.db.fetch_one("batch_job_lock", job_id=job["job_id"]) is None:
                    continue
                seqs = [r["seq"] for r in await self.db.fetch_all("batch_items_pick", job_id=job["job_id"],
                                                                  size=self.max_requests)]
                if not seqs:
                    continue
                batch = await self.db.fetch_one(
                    "batch_insert", job_id=job["job_id"], model=job["model"], items=len(seqs), owner=self.owner,
                    lease_s=self.lease_s,
                )
                await self.db.execute("batch_items_lease", job_id=job["job_id"], batch_id=batch["batch_id"], seqs=seqs)
                await self.db.fetch_all("rerun_jobs_mark_running", job_ids=[job["job_id"]])
            created += 1
            self.stats.created += 1
            log.info("batch_created", job=job["job_id"], batch=batch["display_name"], items=len(seqs))
            # Held by this runner already: submit it now rather than at the next claim.
            await self._advance({**dict(batch), "cancel_requested_at": None})
        return created

    # ---- one step of a batch -----------------------------------------------------------------

    async def _advance(self, batch: Any) -> None:
        name = batch["provider_name"]
        try:
            if name is None:
                if batch["cancel_requested_at"] is not None:
                    await self._record(batch, "CANCELLED", None, "the job was canceled before its batch was sent", polled=0)
                else:
                    await self._submit(batch)
                return
            if batch["cancel_requested_at"] is not None and batch["cancel_sent_at"] is None and batch["state"] not in DONE_STATES:
                await self.client.cancel(name)
                await self.db.execute("batch_cancel_sent", batch_id=batch["batch_id"], owner=self.owner)
                log.info("batch_cancel_sent", job=batch["job_id"], batch=name)
            state = await self.client.state(name)
        except AnalysisError as exc:
            # The provider refused or stayed unreachable through the client's retries: try again next poll.
            log.warning("batch_provider_error", job=batch["job_id"], batch=batch["display_name"], error=str(exc)[:300],
                        retry_in_s=self.poll_s)
            await self.db.execute("batch_polled", batch_id=batch["batch_id"], owner=self.owner, state=batch["state"],
                                  error=str(exc)[:500], poll_s=self.poll_s)
            return
        if not state.done:
            await self.db.execute("batch_polled", batch_id=batch["batch_id"], owner=self.owner, state=state.state,
                                  error=state.error, poll_s=self.poll_s)
            return
        await self._record(batch, state.state, name, state.error, polled=1)

    async def _requests(self, batch: Any) -> tuple[list[Any], list[BatchRequest]]:
        items = await self.db.fetch_all("batch_items", job_id=batch["job_id"], batch_id=batch["batch_id"])
        config = await self._config(batch["job_id"])
        requests = [
            BatchRequest(key=f"{item['job_id']}:{item['seq']}", conversation=conversation_for_analysis(item),
                         config=narrowed(config, item["outputs"]))
            for item in items
        ]
        return items, requests

    async def _config(self, job_id: str) -> Any:
        if job_id not in self._configs:
            row = await self.db.fetch_one("rerun_job_snapshot", job_id=job_id)
            self._configs[job_id] = effective_config(row["config_snapshot"])
        return self._configs[job_id]

    async def _submit(self, batch: Any) -> None:
        items, requests = await self._requests(batch)
        if not requests:  # its items were all finished or given back (a runner died after recording them)
            await self._record(batch, "SUCCEEDED", None, None, polled=0)
            return
        name = None
        # Counted before the provider is called: a runner that dies during the call leaves the count behind.
        await self.db.execute("batch_submit_attempt", batch_id=batch["batch_id"], owner=self.owner)
        if batch["submit_attempts"] > 0:
            # An earlier attempt may have reached the provider before its runner died or its answer was lost.
            name = await self.client.find(batch["display_name"])
            if name is not None:
                log.info("batch_adopted", job=batch["job_id"], batch=batch["display_name"], provider_name=name)
        try:
            if name is None:
                name = await self.client.submit(requests, display_name=batch["display_name"])
        except AnalysisError as exc:
            if exc.retryable:
                log.warning("batch_submit_failed", job=batch["job_id"], batch=batch["display_name"], error=str(exc)[:300],
                            retry_in_s=self.poll_s)
                await self.db.execute("batch_submit_failed", batch_id=batch["batch_id"], owner=self.owner,
                                      error=str(exc)[:500], retry_s=self.poll_s)
                return
            # The provider refused the batch itself: its items fail (retryable with retryRerun), nothing was spent.
            await self._record(batch, "FAILED", None, f"the batch was refused: {exc}", polled=0)
            return
        await self.db.execute("batch_submitted", batch_id=batch["batch_id"], owner=self.owner, provider_name=name,
                              poll_s=self.poll_s)
        self.stats.submitted += 1
        log.info("batch_submitted", job=batch["job_id"], batch=batch["display_name"], provider_name=name,
                 requests=len(requests))

    async def _record(self, batch: Any, state: str, name: str | None, error: str | None, *, polled: int) -> None:
        """Put a done batch's results on its items, and fail (or cancel) the items it did not answer."""
        items, requests = await self._requests(batch)
        results: dict[str, BatchResult] = {}
        if name is not None and requests:
            try:
                results = {r.key: r for r in await self.client.results(name, requests) if r.key}
            except AnalysisError as exc:
                if exc.retryable:  # the results could not be fetched now: the next poll tries again
                    await self.db.execute("batch_polled", batch_id=batch["batch_id"], owner=self.owner, state=state,
                                          error=str(exc)[:500], poll_s=self.poll_s)
                    return
                error = f"{error or state}; its results could not be read: {exc}"
        lease_owner = f"batch:{batch['batch_id']}"
        recorded = failed = canceled = 0
        for item, request in zip(items, requests, strict=True):
            result = results.get(request.key)
            if result is None or not result.answered:
                if state == "CANCELLED" or batch["cancel_requested_at"] is not None:
                    # Canceled with its job (or back to pending, to go in another batch, when only the batch was).
                    await self.db.fetch_one("rerun_item_release", job_id=item["job_id"], seq=item["seq"], owner=lease_owner)
                    canceled += 1
                    continue
                values, message = failure_columns(None), _unanswered(state, batch["display_name"], error)
            elif result.outcome is not None:
                values, message = outcome_columns(result.outcome, batch=True), None
            else:
                assert result.error is not None
                values, message = failure_columns(result.error.usage, batch=True), str(result.error)
            job = await self.db.fetch_one(
                "rerun_item_finish", job_id=item["job_id"], seq=item["seq"], owner=lease_owner, error=message,
                outputs=item["outputs"], **values,
            )
            if job is not None and job["job_id"] is not None:
                recorded += 1
                failed += message is not None
        await self.db.execute("batch_recorded", batch_id=batch["batch_id"], owner=self.owner, state=state,
                              error=error, polled=polled)
        self.stats.recorded += 1
        self.stats.items_recorded += recorded
        self._configs.pop(batch["job_id"], None)
        log.info("batch_recorded", job=batch["job_id"], batch=batch["display_name"], state=state, items=recorded,
                 failed=failed, returned_or_canceled=canceled, error=error)


def _unanswered(state: str, display_name: str, error: str | None) -> str:
    reason = {"EXPIRED": "expired before it was answered", "FAILED": "failed",
              "CANCELLED": "was canceled"}.get(state, f"ended {state} without an answer for it")
    return f"the Gemini batch {display_name} {reason}" + (f": {error}" if error else "") + " (no charge; retry with retryRerun)"
