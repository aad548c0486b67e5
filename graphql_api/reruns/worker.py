"""Rerun workers: claim items with a lease, analyze them, commit each outcome only while the lease holds.

Any number of worker processes (the server runs one in-process by default; `python -m graphql_api
worker` runs one alone) share the queue in PostgreSQL. A worker that dies loses nothing: its leases
expire and another worker claims the items again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_exponential

from graphql_api.analysis.base import AnalysisConfig, AnalysisError, Analyzer
from graphql_api.analysis.config import effective_config
from graphql_api.analyses import failure_columns, outcome_columns
from graphql_api.db import Database
from graphql_api.reruns import FINAL_STATUSES
from graphql_api.errors import Conflict, not_found
from graphql_api.conversations import conversation_for_analysis

log = structlog.stdlib.get_logger(__name__)

# A claimed item whose worker keeps dying gives up after this many claims.
MAX_ATTEMPTS = 3
# Tries at committing a finished item before it is given back to be claimed again.
COMMIT_ATTEMPTS = 5


class RerunWorker:
    def __init__(
        self,
        *,
        db: Database,
        analyzer: Analyzer,
        concurrency: int = 8,
        lease_s: float = 30.0,
        idle_poll_s: float = 1.0,
        owner: str | None = None,
    ):
        self.db = db
        self.analyzer = analyzer
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.idle_poll_s = idle_poll_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:04x}"
        # Up to `concurrency` analyses run at once; a few more items are claimed ahead so a slot that
        # frees starts its next analysis at once, while the finished one commits.
        self.prefetch = max(1, concurrency // 4)
        self._slots = asyncio.Semaphore(concurrency)
        self._holding = 0  # claimed items whose analysis has not ended
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._configs: dict[str, Any] = {}
        self._held: set[tuple[str, int]] = set()  # (job id, seq) of items claimed and not yet finished or released
        self._canceling: dict[str, tuple[float, bool]] = {}  # job id -> (checked at, being canceled)
        # A claim whose answer was lost (the connection died) may have leased items we never saw.
        self._unsure_of_leases = False
        self.processed = 0
        self.failed = 0
        self.db_seconds = 0.0  # time in claim and commit statements
        self.analyze_seconds = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def wake(self) -> None:
        """New work may be there (a job was created, a slot freed): look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        log.info("rerun_worker_started", owner=self.owner, concurrency=self.concurrency, lease_s=self.lease_s)
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping:
                want = self.concurrency + self.prefetch - self._holding
                claimed = await self._claim(want) if want > 0 else []
                for item in claimed:
                    self._holding += 1
                    task = asyncio.create_task(self._process(item))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if claimed:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle_poll_s)
        finally:
            # Leases stay alive while the running analyses finish; items not started are given back.
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            heartbeat.cancel()
            log.info("rerun_worker_stopped", owner=self.owner, processed=self.processed)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _claim(self, batch: int) -> list[Any]:
        started = time.perf_counter()
        try:
            if self._unsure_of_leases:
                await self._release_unknown_leases()
            rows = await self.db.fetch_all("rerun_items_claim", batch=batch, owner=self.owner, lease_s=self.lease_s)
            self._held.update((r["job_id"], r["seq"]) for r in rows)
            self.db_seconds += time.perf_counter() - started
        except Exception as exc:  # asyncpg raises its own types when the server goes away
            self._unsure_of_leases = True
            log.warning("rerun_claim_failed", owner=self.owner, error=type(exc).__name__, retry_in_s=self.idle_poll_s)
            await asyncio.sleep(self.idle_poll_s)
            return []
        if rows:
            # Separate from the claim: the claim must never wait on a job row (cancel holds it while it
            # waits on pending items). Only the job's status depends on it, so a failure is just logged.
            try:
                await self.db.fetch_all("rerun_jobs_mark_running", job_ids=sorted({r["job_id"] for r in rows}))
            except Exception as exc:
                log.warning("rerun_mark_running_failed", owner=self.owner, error=type(exc).__name__)
        return rows

    async def _config(self, job_id: str) -> Any:
        if job_id not in self._configs:
            row = await self.db.fetch_one("rerun_job_snapshot", job_id=job_id)
            self._configs[job_id] = effective_config(row["config_snapshot"])
        return self._configs[job_id]

    async def _process(self, item: Any) -> None:
        started = time.monotonic()
        key = (item["job_id"], item["seq"])
        try:
            async with self._slots:
                if self._stopping or await self._job_canceling(item["job_id"]):
                    # Claimed ahead but not started: give it back rather than analyze it.
                    await self._release(item)
                    return
                values, error = await self._analyze(item)
        finally:
            self._holding -= 1
            self._wake.set()
        try:
            await self._commit(item, values, error, started)
        finally:
            self._held.discard(key)

    async def _release_unknown_leases(self) -> None:
        """Give back items leased to this worker that it doesn't know of, rather than wait out their lease."""
        leased = await self.db.fetch_all("rerun_items_leased_by", owner=self.owner)
        unknown = [row for row in leased if (row["job_id"], row["seq"]) not in self._held]
        for row in unknown:
            await self.db.fetch_one("rerun_item_release", job_id=row["job_id"], seq=row["seq"], owner=self.owner)
        if unknown:
            log.info("rerun_unknown_leases_released", owner=self.owner, count=len(unknown))
        self._unsure_of_leases = False

    async def _job_canceling(self, job_id: str) -> bool:
        """Whether the job is being canceled, looked up at most once a second per job."""
        now = time.monotonic()
        checked = self._canceling.get(job_id)
        if checked is None or now - checked[0] > 1.0:
            try:
                canceling = bool(await self.db.fetch_val("rerun_job_canceling", job_id=job_id))
            except Exception:
                canceling = False  # the commit will tell; starting is the safe choice
            checked = self._canceling[job_id] = (now, canceling)
        return checked[1]

    async def _release(self, item: Any) -> None:
        key = (item["job_id"], item["seq"])
        try:
            await self.db.fetch_one("rerun_item_release", job_id=item["job_id"], seq=item["seq"], owner=self.owner)
        except Exception as exc:  # the lease runs out and another worker takes it
            log.warning("rerun_release_failed", job=item["job_id"], seq=item["seq"], error=type(exc).__name__)
        finally:
            self._held.discard(key)

    async def _analyze(self, item: Any) -> tuple[dict[str, Any], str | None]:
        """The item's stored columns and its error, if it failed."""
        if item["attempts"] > MAX_ATTEMPTS:
            error = f"gave up after {MAX_ATTEMPTS} attempts: the workers handling it stopped before finishing"
            return failure_columns(None), error
        analyze_started = time.perf_counter()
        try:
            config = narrowed(await self._config(item["job_id"]), item["outputs"])
            return outcome_columns(await self.analyzer.analyze(conversation_for_analysis(item), config)), None
        except AnalysisError as exc:
            # When the model answered, its tokens are charged with the failure.
            return failure_columns(exc.usage), str(exc)
        except Exception as exc:
            log.exception("rerun_item_crashed", job=item["job_id"], conversation=item["conversation_id"])
            return failure_columns(None), f"internal error: {type(exc).__name__}"
        finally:
            self.analyze_seconds += time.perf_counter() - analyze_started

    async def _commit(self, item: Any, values: dict[str, Any], error: str | None, started: float) -> None:
        def log_retry(state: RetryCallState) -> None:
            log.warning("rerun_commit_retry", job=item["job_id"], seq=item["seq"],
                        error=type(state.outcome.exception()).__name__, retry_in_s=state.next_action.sleep)  # type: ignore[union-attr]

        # The database may be restarting: the lease gives us time to retry (1, 2, 4 and 8 s apart).
        retrying = AsyncRetrying(stop=stop_after_attempt(COMMIT_ATTEMPTS), wait=wait_exponential(max=10),
                                 before_sleep=log_retry, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    commit_started = time.perf_counter()
                    job = await self.db.fetch_one(
                        "rerun_item_finish", job_id=item["job_id"], seq=item["seq"], owner=self.owner, error=error,
                        outputs=item["outputs"], **values
                    )
                    self.db_seconds += time.perf_counter() - commit_started
        except Exception:
            log.error("rerun_commit_failed", job=item["job_id"], seq=item["seq"], outcome="item given back to be claimed again")
            await self._release(item)
            return
        if job is None or job["job_id"] is None:
            log.warning("rerun_lease_lost", job=item["job_id"], conversation=item["conversation_id"], owner=self.owner,
                        outcome="result discarded: another worker owns the item")
            return
        self.processed += 1
        self.failed += error is not None
        log.debug("rerun_item_done", job=item["job_id"], conversation=item["conversation_id"],
                  status="FAILED" if error else "SUCCEEDED", ms=round((time.monotonic() - started) * 1000))
        if error:
            log.warning("rerun_item_failed", job=item["job_id"], conversation=item["conversation_id"], error=error)
        finished = job["succeeded"] + job["failed"]
        step = max(1, job["total"] // 10)
        if finished % step == 0 and job["status"] not in FINAL_STATUSES:
            log.info("rerun_job_progress", job=job["job_id"], finished=finished, of=job["total"], failed=job["failed"])
        if job["status"] in FINAL_STATUSES:
            self._configs.pop(item["job_id"], None)
            log.info("rerun_job_finished", job=job["job_id"], status=job["status"], succeeded=job["succeeded"],
                     failed=job["failed"], canceled=job["canceled"], cost_usd=job["cost_usd"])

    async def _heartbeat(self) -> None:
        """Extend the leases of the items held, and cancel items that dead workers left in canceled jobs."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if self._held:
                    held = sorted(self._held)
                    await self.db.fetch_all(
                        "rerun_items_heartbeat",
                        owner=self.owner,
                        lease_s=self.lease_s,
                        job_ids=[h[0] for h in held],
                        seqs=[h[1] for h in held],
                    )
                reaped = await self.db.fetch_val("rerun_items_reap")
                if reaped:
                    log.info("rerun_abandoned_items_canceled", count=reaped)
            except Exception as exc:
                log.warning("rerun_heartbeat_failed", owner=self.owner, error=type(exc).__name__)


def narrowed(config: AnalysisConfig, outputs: list[str] | None) -> AnalysisConfig:
    """The config of an item's request: all outputs (None), or only those it asks for (rerun_items.outputs)."""
    return config if outputs is None else dataclasses.replace(config, outputs=frozenset(outputs))


async def cancel_rerun(*, db: Database, workspace_id: int, job_id: str) -> Any:
    """Cancel what has not started; running items finish and keep their results."""
    async with db.transaction():
        job = await db.fetch_one("rerun_job_lock", workspace_id=workspace_id, job_id=job_id)
        if job is None:
            raise not_found("rerun job", job_id)
        if job["status"] in FINAL_STATUSES:
            raise Conflict(f"Rerun job {job_id} already ended as {job['status']}; there is nothing to cancel.", status=job["status"])
        if job["cancel_requested_at"] is not None:
            raise Conflict(f"Rerun job {job_id} is already being canceled; its running items are finishing.")
        canceled = await db.fetch_val("rerun_job_cancel", workspace_id=workspace_id, job_id=job_id)
        job = await db.fetch_one("rerun_items_count_canceled", job_id=job_id, canceled=canceled)
    log.info("rerun_job_cancel", job=job_id, canceled_items=canceled, status=job["status"])
    return job
