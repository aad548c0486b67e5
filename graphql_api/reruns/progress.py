"""Rerun progress and completed analyses: one LISTEN connection per process, fanned out to in-process subscribers.
The same connection hears API key revocations (the authenticators forget the key and close its WebSockets).

Progress notifications only say "job J has N finished items now"; the events themselves are read from the
tables, once per job per process however many subscribe, and each subscriber fills any gap in the
finish numbers from the tables. A slow re-read of each watched job is the safety net: a lost
notification only delays an event.

An analysis notification names a new result (workspace, agent, id); the results of a watched agent are read
in batches, once per process however many subscribe to it, and offered to each of its subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_exponential

from graphql_api.db import Database
from graphql_api.reruns import FINAL_STATUSES
from graphql_api.workspaces import key_revoked, recheck_sessions

log = structlog.stdlib.get_logger(__name__)

CHANNEL_PROGRESS = "rerun_progress"
CHANNEL_QUEUED = "rerun_queued"
CHANNEL_KEY_REVOKED = "api_key_revoked"  # payload: the key's id (migration 007)
CHANNEL_ANALYSIS = "analysis_completed"  # payload: {w: workspace, a: agent, r: result id, t: trigger} (migration 014)
CHANNELS = (CHANNEL_PROGRESS, CHANNEL_QUEUED, CHANNEL_KEY_REVOKED, CHANNEL_ANALYSIS)
FETCH_BATCH = 500
QUEUE_LIMIT = 10_000
# An agent's results are read this long after the first notification, together with those that came meanwhile.
ANALYSIS_COALESCE_S = 0.02
RECENT_RESULTS = 10_000  # result ids an agent watch remembers, so a catch-up never repeats an event
KEY_RECHECK_S = 10.0  # also how often the listener connection proves it is alive


@dataclass
class ProgressEvent:
    job: Any  # the rerun_jobs row as of this event
    item: Any | None = None  # the rerun_items row that finished, None for a job-only event
    result: Any | None = None  # its analysis_results row, when it succeeded
    index: int = 0  # the item's finish index, or the job's finished count for job-only events
    # What subscribers build from the event, built once for all of them (one event goes to every subscriber).
    view: Any = None


async def fetch_finished(db: Database, *, workspace_id: int, job_id: str, after: int, limit: int) -> tuple[list[Any], dict[int, Any]]:
    items = await db.fetch_all(
        "rerun_items_finished_since", workspace_id=workspace_id, job_id=job_id, after_index=after, limit=limit
    )
    ids = [i["result_id"] for i in items if i["result_id"] is not None]
    results = {}
    if ids:
        results = {r["id"]: r for r in await db.fetch_all("analysis_results_by_ids", workspace_id=workspace_id, ids=ids)}
    return items, results


def finished_count(job: Any) -> int:
    return job["succeeded"] + job["failed"]


class Subscriber:
    def __init__(self, hub: ProgressHub, workspace_id: int, job_id: str):
        self.hub = hub
        self.workspace_id = workspace_id
        self.job_id = job_id
        self.queue: asyncio.Queue[ProgressEvent] = asyncio.Queue(QUEUE_LIMIT)
        self.lagged = False

    def offer(self, event: ProgressEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True  # the subscriber re-reads what it missed from the tables

    async def _fetch_retrying(self, *, after: int, limit: int) -> tuple[list[Any], dict[int, Any]]:
        """Read missed items, waiting out a database restart rather than ending the stream."""
        def log_retry(state: RetryCallState) -> None:
            log.warning("progress_gap_read_failed", job=self.job_id, error=type(state.outcome.exception()).__name__,  # type: ignore[union-attr]
                        retry=state.attempt_number)

        retrying = AsyncRetrying(stop=stop_after_attempt(8), wait=wait_exponential(multiplier=0.25, max=5.0),
                                 before_sleep=log_retry, reraise=True)
        return await retrying(fetch_finished, self.hub.db, workspace_id=self.workspace_id, job_id=self.job_id,
                              after=after, limit=limit)

    async def events(self, *, after: int) -> AsyncIterator[ProgressEvent]:
        """Events after finish index `after`, in order, each once, ending with the job's final state."""
        cursor = after
        db = self.hub.db
        while True:
            if self.lagged:
                self.lagged = False
                while not self.queue.empty():
                    self.queue.get_nowait()
                job = await db.fetch_one("rerun_job_get", workspace_id=self.workspace_id, job_id=self.job_id)
                event = ProgressEvent(job=job, index=finished_count(job))  # then the gap is read below
            else:
                event = await self.queue.get()
            if event.index > cursor + (1 if event.item is not None else 0):
                # A gap (a notification raced or was lost, or we lagged): read the missing items.
                upto = event.index - (1 if event.item is not None else 0)
                while cursor < upto:
                    items, results = await self._fetch_retrying(after=cursor, limit=min(FETCH_BATCH, upto - cursor))
                    if not items:
                        break
                    for item in items:
                        cursor = item["finish_index"]
                        yield ProgressEvent(job=event.job, item=item, result=results.get(item["result_id"]), index=cursor)
            if event.item is not None and event.index == cursor + 1:
                cursor = event.index
                yield event
            if event.job["status"] in FINAL_STATUSES and cursor >= finished_count(event.job):
                if event.item is None:
                    yield event  # a final state reached without an item finishing (a cancel)
                return


class Watch:
    """Reads what some subscribers of this process wait for, once for all of them, in a task of its own that runs
    while it has subscribers; `dirty` says there is something new to read."""

    def __init__(self, hub: ProgressHub, workspace_id: int):
        self.hub = hub
        self.workspace_id = workspace_id
        self.subscribers: set[Any] = set()
        self.dirty = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        raise NotImplementedError


class JobWatch(Watch):
    """Reads one job's new events once for every subscriber in this process."""

    def __init__(self, hub: ProgressHub, workspace_id: int, job_id: str):
        self.job_id = job_id
        self.cursor: int | None = None
        self.last_status: str | None = None
        super().__init__(hub, workspace_id)

    async def _run(self) -> None:
        db = self.hub.db
        try:
            while self.subscribers:
                try:
                    await asyncio.wait_for(self.dirty.wait(), timeout=self.hub.poll_s)
                except TimeoutError:
                    pass
                self.dirty.clear()
                try:
                    await self._read(db)
                except Exception as exc:  # the database may be restarting; the next poll tries again
                    log.warning("progress_read_failed", job=self.job_id, error=type(exc).__name__)
                    await asyncio.sleep(min(self.hub.poll_s, 1.0))
        finally:
            if self.hub._watches.get((self.workspace_id, self.job_id)) is self:
                del self.hub._watches[(self.workspace_id, self.job_id)]

    async def _read(self, db: Database) -> None:
        job = await db.fetch_one("rerun_job_get", workspace_id=self.workspace_id, job_id=self.job_id)
        if job is None:
            return
        if self.cursor is None:
            self.cursor = finished_count(job)
        upto = finished_count(job)
        while self.cursor < upto:
            items, results = await fetch_finished(
                db, workspace_id=self.workspace_id, job_id=self.job_id, after=self.cursor, limit=FETCH_BATCH
            )
            # Items that finished after the job row was read wait for the next read (their notification comes),
            # so every event's counters count its own item.
            items = [item for item in items if item["finish_index"] <= upto]
            if not items:
                break
            for item in items:
                self.cursor = item["finish_index"]
                self._broadcast(ProgressEvent(job=job, item=item, result=results.get(item["result_id"]), index=self.cursor))
        if job["status"] != self.last_status:
            self.last_status = job["status"]
            self._broadcast(ProgressEvent(job=job, index=finished_count(job)))

    def _broadcast(self, event: ProgressEvent) -> None:
        for subscriber in list(self.subscribers):
            subscriber.offer(event)


@dataclass
class AnalysisEvent:
    result: Any  # the analysis_results row
    view: Any = None  # what subscribers build from it, built once for all of them


class SubscriberLagged(Exception):
    """A subscriber left QUEUE_LIMIT events unread: its stream ends rather than skip some silently."""


class AnalysisSubscriber:
    def __init__(self, workspace_id: int, agent_id: str):
        self.workspace_id = workspace_id
        self.agent_id = agent_id
        self.queue: asyncio.Queue[AnalysisEvent] = asyncio.Queue(QUEUE_LIMIT)
        self.lagged = False

    def offer(self, event: AnalysisEvent) -> None:
        if self.lagged:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True

    async def events(self) -> AsyncIterator[AnalysisEvent]:
        """Each result of the agent committed from now on, in the order they were read."""
        while True:
            if self.lagged and self.queue.empty():
                raise SubscriberLagged(f"more than {QUEUE_LIMIT} events were left unread")
            yield await self.queue.get()


class AgentWatch(Watch):
    """Reads one agent's new results once for every subscriber in this process: the ids notifications name, and,
    after the listener was away, every result committed since the newest one seen."""

    def __init__(self, hub: ProgressHub, workspace_id: int, agent_id: str, cursor: int):
        self.agent_id = agent_id
        self.pending: list[int] = []
        self.cursor = cursor  # the newest result id seen
        self.catch_up = False
        self.recent: dict[int, None] = {}  # ids already sent, oldest first
        super().__init__(hub, workspace_id)

    async def _run(self) -> None:
        db = self.hub.db
        try:
            while self.subscribers:
                await self.dirty.wait()
                await asyncio.sleep(ANALYSIS_COALESCE_S)
                self.dirty.clear()
                ids, self.pending = self.pending, []
                catch_up, self.catch_up = self.catch_up, False
                try:
                    rows = await self._read(db, ids, catch_up)
                except Exception as exc:  # the database may be restarting: read them again in a moment
                    log.warning("analysis_events_read_failed", agent=self.agent_id, error=type(exc).__name__)
                    self.pending[:0] = ids
                    self.catch_up = self.catch_up or catch_up
                    self.dirty.set()
                    await asyncio.sleep(1.0)
                    continue
                for row in rows:
                    self._broadcast(row)
        finally:
            if self.hub._agent_watches.get((self.workspace_id, self.agent_id)) is self:
                del self.hub._agent_watches[(self.workspace_id, self.agent_id)]

    async def _read(self, db: Database, ids: list[int], catch_up: bool) -> list[Any]:
        rows: dict[int, Any] = {}
        for start in range(0, len(ids), FETCH_BATCH):
            for row in await db.fetch_all("analysis_results_by_ids", workspace_id=self.workspace_id,
                                          ids=ids[start:start + FETCH_BATCH]):
                rows[row["id"]] = row
        if catch_up:
            after = self.cursor
            while True:
                batch = await db.fetch_all("analysis_events_since", workspace_id=self.workspace_id,
                                           agent_id=self.agent_id, after_id=after, limit=FETCH_BATCH)
                rows.update((row["id"], row) for row in batch)
                if len(batch) < FETCH_BATCH:
                    break
                after = batch[-1]["id"]
        return [rows[i] for i in sorted(rows) if rows[i]["agent_id"] == self.agent_id and i not in self.recent]

    def _broadcast(self, row: Any) -> None:
        self.cursor = max(self.cursor, row["id"])
        self.recent[row["id"]] = None
        if len(self.recent) > RECENT_RESULTS:
            del self.recent[next(iter(self.recent))]
        event = AnalysisEvent(result=row)
        for subscriber in list(self.subscribers):
            subscriber.offer(event)


def _detach(watches: dict[Any, Any], key: Any, watch: Any, subscriber: Any) -> None:
    """A subscriber leaves its watch; the last one ends it. It is forgotten now, not when its task gets round to
    ending: a new subscriber gets a new watch."""
    watch.subscribers.discard(subscriber)
    if not watch.subscribers:
        if watches.get(key) is watch:
            del watches[key]
        watch.task.cancel()


class ProgressHub:
    def __init__(self, db: Database, url: str, *, poll_s: float = 5.0, on_queued: Callable[[], None] | None = None,
                 on_analysis: Callable[[], None] | None = None):
        self.db = db
        self.url = url
        self.poll_s = poll_s
        self.on_queued = on_queued
        self.on_analysis = on_analysis  # a result committed (its analysis.completed deliveries, if any, are due)
        self._watches: dict[tuple[int, str], JobWatch] = {}
        self._agent_watches: dict[tuple[int, str], AgentWatch] = {}
        self._listener: asyncio.Task | None = None
        self.notifications = 0

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for watch in [*self._watches.values(), *self._agent_watches.values()]:
            watch.task.cancel()

    @contextlib.asynccontextmanager
    async def subscribe(self, workspace_id: int, job_id: str) -> AsyncIterator[Subscriber]:
        subscriber = Subscriber(self, workspace_id, job_id)
        key = (workspace_id, job_id)
        watch = self._watches.get(key)
        if watch is None or watch.task.done():
            watch = self._watches[key] = JobWatch(self, workspace_id, job_id)
        watch.subscribers.add(subscriber)
        watch.dirty.set()
        try:
            yield subscriber
        finally:
            _detach(self._watches, key, watch, subscriber)

    @contextlib.asynccontextmanager
    async def subscribe_analyses(self, workspace_id: int, agent_id: str) -> AsyncIterator[AnalysisSubscriber]:
        """The results of an agent's conversations committed from now on (any trigger; the caller filters)."""
        subscriber = AnalysisSubscriber(workspace_id, agent_id)
        key = (workspace_id, agent_id)
        watch = self._agent_watches.get(key)
        if watch is None or watch.task.done():
            # Where a catch-up after a lost connection starts: the newest result now (an index's last entry).
            cursor = await self.db.fetch_val("analysis_results_newest_id")
            watch = self._agent_watches.get(key)  # another subscriber may have made it meanwhile
            if watch is None or watch.task.done():
                watch = self._agent_watches[key] = AgentWatch(self, workspace_id, agent_id, cursor)
        watch.subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            _detach(self._agent_watches, key, watch, subscriber)

    def _on_analysis(self, payload: str) -> None:
        try:
            message = orjson.loads(payload)
            made_due = message.get("d", 1)  # deliveries the result made due (absent: assume some)
        except (ValueError, AttributeError):
            log.warning("analysis_notification_unreadable", payload=payload[:200])
            return
        if made_due and self.on_analysis is not None:
            self.on_analysis()  # the delivery loop wakes only when there is something to send
        if not self._agent_watches:
            return
        try:
            watch = self._agent_watches.get((int(message["w"]), message["a"]))
            result_id = int(message["r"]) if watch is not None else 0
        except (ValueError, KeyError, TypeError):
            log.warning("analysis_notification_unreadable", payload=payload[:200])
            return
        if watch is not None:
            watch.pending.append(result_id)
            watch.dirty.set()

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self.notifications += 1
        if channel == CHANNEL_ANALYSIS:
            self._on_analysis(payload)
            return
        if channel == CHANNEL_QUEUED:
            if self.on_queued is not None:
                self.on_queued()
            return
        if channel == CHANNEL_KEY_REVOKED:
            try:
                key_revoked(db=self.db, key_id=int(payload))
            except ValueError:
                log.warning("key_revocation_unreadable", payload=payload[:200])
            return
        try:
            message = orjson.loads(payload)
            watch = self._watches.get((int(message["w"]), message["j"]))
        except (ValueError, KeyError, TypeError):
            log.warning("progress_notification_unreadable", payload=payload[:200])
            return
        if watch is not None:
            watch.dirty.set()

    async def _recheck_keys(self, *, forget_cached: bool = False) -> None:
        """The safety net of revocation notices: a lost one delays the end of a revoked key's sockets by at most
        KEY_RECHECK_S (or until this connection is back)."""
        try:
            await recheck_sessions(db=self.db, forget_cached=forget_cached)
        except Exception as exc:  # the database may be restarting; the next round tries again
            log.warning("key_recheck_failed", error=type(exc).__name__)

    async def _connect(self) -> asyncpg.Connection:
        """A connection listening on every channel, tried until one is made, with backoff (0.2 s doubling to 5 s)."""
        def log_retry(state: RetryCallState) -> None:
            log.warning("progress_listener_lost", error=type(state.outcome.exception()).__name__,  # type: ignore[union-attr]
                        retry_in_s=state.next_action.sleep)  # type: ignore[union-attr]

        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.2, max=5.0), before_sleep=log_retry):
            with attempt:
                conn = await asyncpg.connect(dsn=self.url)
                try:
                    for channel in CHANNELS:
                        await conn.add_listener(channel, self._on_notification)
                except BaseException:
                    conn.terminate()
                    raise
        return conn

    async def _listen_forever(self) -> None:
        """Listen for the life of the process; a lost connection is made again at once, then with backoff."""
        while True:
            conn = await self._connect()
            try:
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c: closed.set())
                log.info("progress_listener_connected", channels=",".join(CHANNELS))
                # Anything sent while we were away is read now.
                for watch in self._watches.values():
                    watch.dirty.set()
                for agent_watch in self._agent_watches.values():
                    agent_watch.catch_up = True
                    agent_watch.dirty.set()
                if self.on_queued is not None:
                    self.on_queued()
                await self._recheck_keys(forget_cached=True)
                while not closed.is_set():
                    try:
                        await asyncio.wait_for(closed.wait(), timeout=KEY_RECHECK_S)
                    except TimeoutError:
                        await conn.execute("SELECT 1")  # a dead socket shows itself here
                        await self._recheck_keys()
            except asyncio.CancelledError:
                if not conn.is_closed():
                    await conn.close()
                raise
            except Exception as exc:
                log.warning("progress_listener_lost", error=type(exc).__name__)
            if not conn.is_closed():
                conn.terminate()
