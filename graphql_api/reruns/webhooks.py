"""Webhooks: a workspace's endpoints, and the delivery loop that sends the outbox.

Delivery rows are written by triggers in the transaction of what they tell: `rerun.finished` in a job's final
transaction (migration 010), `analysis.completed` in a result's (migration 014, in the endpoint's payload format).
This module signs them per the Standard Webhooks specification and POSTs them, retrying with backoff. The state
lives in the table, so retries survive restarts and any number of processes share the work.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import structlog
from standardwebhooks.webhooks import Webhook

from graphql_api.db import Database
from graphql_api.errors import BadUserInput, LimitExceeded, not_found
from graphql_api.inputs import check_text

log = structlog.stdlib.get_logger(__name__)

EVENT_TYPES = ("rerun.finished", "analysis.completed")
PAYLOAD_FORMATS = ("API", "RETELL")
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 1000
MAX_ENABLED_ENDPOINTS = 20
# After a rotation the old secret signs beside the new one for a day, so receivers can switch without a gap.
ROTATION_GRACE_S = 24 * 3600
# Of a receiver's answer, this much is kept as the attempt's error.
MAX_ERROR_CHARS = 500


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def checked_url(url: str, *, argument: str) -> str:
    check_text(url, argument=argument)
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise BadUserInput(f"`{argument}` takes at most {MAX_URL_LENGTH} characters.", argument=argument)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise BadUserInput(f"`{argument}` is not a URL: {exc}.", argument=argument) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadUserInput(f"`{argument}` must be an http or https URL with a host, e.g. https://example.com/hooks.",
                           argument=argument)
    if parts.username or parts.password:
        raise BadUserInput(f"`{argument}` must not carry credentials; verify the signature instead.", argument=argument)
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise BadUserInput(f"`{argument}` must not contain spaces or control characters.", argument=argument)
    return url


def default_event_types(payload_format: str) -> list[str]:
    """What an endpoint takes when it doesn't say: a RETELL endpoint its analyses (all a Retell consumer reads), an
    API endpoint rerun.finished (analysis.completed is one event per conversation: asked for, never a surprise)."""
    return ["analysis.completed"] if payload_format == "RETELL" else ["rerun.finished"]


def _checked_description(description: str) -> str:
    check_text(description, argument="input.description")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise BadUserInput(f"`input.description` takes at most {MAX_DESCRIPTION_LENGTH} characters.",
                           argument="input.description")
    return description


def _checked_event_types(event_types: Sequence[str]) -> list[str]:
    if not event_types:
        raise BadUserInput("`input.eventTypes` needs at least one event type.", argument="input.eventTypes")
    return sorted(set(event_types))


async def create_endpoint(
    *, db: Database, workspace_id: int, url: str, description: str, event_types: Sequence[str] | None,
    payload_format: str = "API", include_previews: bool = False,
) -> tuple[Any, str]:
    """A new enabled endpoint and its secret, which is shown this once."""
    url = checked_url(url, argument="input.url")
    description = _checked_description(description)
    types = _checked_event_types(event_types) if event_types is not None else default_event_types(payload_format)
    async with db.transaction():
        enabled = await db.fetch_val("webhook_endpoints_count_enabled", workspace_id=workspace_id)
        if enabled >= MAX_ENABLED_ENDPOINTS:
            raise LimitExceeded(f"A workspace has at most {MAX_ENABLED_ENDPOINTS} enabled webhook endpoints; disable one first.",
                                limit="max_enabled_webhook_endpoints", value=MAX_ENABLED_ENDPOINTS)
        secret = new_secret()
        row = await db.fetch_one(
            "webhook_endpoint_insert", id="whe_" + secrets.token_hex(10), workspace_id=workspace_id, url=url,
            description=description, event_types=types, secret=secret, payload_format=payload_format,
            include_previews=include_previews,
        )
    log.info("webhook_endpoint_created", endpoint=row["id"], workspace=workspace_id, event_types=",".join(types),
             payload_format=payload_format)
    return row, secret


async def update_endpoint(
    *, db: Database, workspace_id: int, endpoint_id: str, description: str | None = None,
    event_types: Sequence[str] | None = None, payload_format: str | None = None, include_previews: bool | None = None,
) -> Any:
    """Change what an endpoint is sent (None leaves a setting as it is); its URL and secret stay. Deliveries already
    written keep the body they were written with."""
    row = await db.fetch_one(
        "webhook_endpoint_update", workspace_id=workspace_id, id=endpoint_id,
        description=_checked_description(description) if description is not None else None,
        event_types=_checked_event_types(event_types) if event_types is not None else None,
        payload_format=payload_format, include_previews=include_previews,
    )
    if row is None:
        raise not_found("webhook endpoint", endpoint_id)
    log.info("webhook_endpoint_updated", endpoint=endpoint_id, workspace=workspace_id,
             event_types=",".join(row["event_types"]), payload_format=row["payload_format"],
             include_previews=row["include_previews"])
    return row


async def list_endpoints(*, db: Database, workspace_id: int) -> list[Any]:
    return await db.fetch_all("webhook_endpoints_list", workspace_id=workspace_id, limit=1000)


async def get_endpoint(*, db: Database, workspace_id: int, endpoint_id: str) -> Any:
    row = await db.fetch_one("webhook_endpoint_get", workspace_id=workspace_id, id=endpoint_id)
    if row is None:
        raise not_found("webhook endpoint", endpoint_id)
    return row


async def disable_endpoint(*, db: Database, workspace_id: int, endpoint_id: str) -> Any:
    """Disabled for good: nothing more is sent to it, and its deliveries not yet made give up."""
    row = await db.fetch_one("webhook_endpoint_disable", workspace_id=workspace_id, id=endpoint_id)
    if row is None:
        raise not_found("webhook endpoint", endpoint_id)
    log.info("webhook_endpoint_disabled", endpoint=endpoint_id, workspace=workspace_id)
    return row


async def rotate_secret(*, db: Database, workspace_id: int, endpoint_id: str) -> tuple[Any, str]:
    """A new secret, shown this once; the old one signs beside it for ROTATION_GRACE_S."""
    secret = new_secret()
    row = await db.fetch_one(
        "webhook_endpoint_rotate_secret", workspace_id=workspace_id, id=endpoint_id, secret=secret, grace_s=ROTATION_GRACE_S
    )
    if row is None:
        raise not_found("webhook endpoint", endpoint_id)
    log.info("webhook_secret_rotated", endpoint=endpoint_id, workspace=workspace_id)
    return row, secret


async def deliveries_page(*, db: Database, workspace_id: int, endpoint_id: str, before_id: int, limit: int) -> list[Any]:
    await get_endpoint(db=db, workspace_id=workspace_id, endpoint_id=endpoint_id)
    return await db.fetch_all(
        "webhook_deliveries_page", workspace_id=workspace_id, endpoint_id=endpoint_id, before_id=before_id, limit=limit
    )


def signed_headers(*, webhook_id: str, body: str, secrets_: Sequence[str], at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers; one `v1,` signature per secret, space-separated."""
    signatures = " ".join(Webhook(secret).sign(webhook_id, at, body) for secret in secrets_)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "user-agent": "analysis-api-webhooks/1",
    }


class ResponseError(Exception):
    """The receiver's answer was not HTTP/1.x as this client reads it."""


# Of an answer's body, at most this much is read (its start is kept as the error); a longer one closes the connection.
MAX_ANSWER_BYTES = 64 * 1024
IDLE_S = 15.0  # an idle kept-alive connection older than this is closed rather than reused


class Poster:
    """The HTTP/1.1 client of the delivery loop: POST a body, read the status and the start of the answer, keep the
    connection for the next delivery to the same origin.

    It does only what a delivery needs (no redirects, proxies, cookies or compression) on asyncio streams, for about
    a fortieth of the CPU httpx spends per request (bench/events.py): at ten thousand events per rerun that is the
    difference between a rerun slowed down and not. TLS uses httpx's context (its CA bundle, as before).
    """

    def __init__(self, *, timeout_s: float, max_idle_per_origin: int = 32):
        self.timeout_s = timeout_s
        self.max_idle_per_origin = max_idle_per_origin
        self._idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]] = {}
        self._ssl: Any = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """The status and the start of the answer's text; raises TimeoutError past the timeout, OSError (ssl errors
        included) when the connection fails, ResponseError for an answer that is not HTTP."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host = (parts.hostname or "").encode("idna").decode("ascii")
        port = parts.port or (443 if https else 80)
        origin = (parts.scheme, host, port)
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._") + (
            "?" + quote(parts.query, safe="/%:@!$&'()*+,;=~-._?") if parts.query else "")
        authority = (f"[{host}]" if ":" in host else host) + ("" if parts.port is None else f":{parts.port}")
        head = "".join([f"POST {target} HTTP/1.1\r\nhost: {authority}\r\n",
                        *(f"{name}: {value}\r\n" for name, value in headers.items()),
                        f"content-length: {len(body)}\r\n\r\n"]).encode("latin-1")
        async with asyncio.timeout(self.timeout_s):
            while True:
                reader, writer, reused = await self._connection(origin, https)
                try:
                    writer.write(head + body)
                    status, text, keep = await self._answer(reader)
                except BaseException as exc:
                    writer.close()
                    # A kept connection the receiver closed meanwhile answers nothing: send again on a new one.
                    if reused and isinstance(exc, asyncio.IncompleteReadError) and not exc.partial:
                        continue
                    if isinstance(exc, asyncio.IncompleteReadError):
                        raise ResponseError("the connection closed before the answer ended") from None
                    if isinstance(exc, (asyncio.LimitOverrunError, ValueError)):
                        raise ResponseError(f"an answer that is not HTTP/1.x ({exc})") from None
                    raise
                if keep:
                    idle = self._idle.setdefault(origin, [])
                    if len(idle) < self.max_idle_per_origin:
                        idle.append((reader, writer, time.monotonic()))
                        return status, text
                writer.close()
                return status, text

    async def _connection(self, origin: tuple[str, str, int], https: bool) -> tuple[Any, Any, bool]:
        idle = self._idle.get(origin)
        while idle:
            reader, writer, since = idle.pop()
            if time.monotonic() - since < IDLE_S and not reader.at_eof() and not writer.is_closing():
                return reader, writer, True
            writer.close()
        if https and self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        reader, writer = await asyncio.open_connection(
            origin[1], origin[2], ssl=self._ssl if https else None, server_hostname=origin[1] if https else None)
        return reader, writer, False

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, str, bool]:
        while True:
            status_line = (await reader.readuntil(b"\r\n")).decode("latin-1")
            version, _, rest = status_line.partition(" ")
            if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
                raise ValueError(f"status line {status_line.strip()[:80]!r}")
            status = int(rest[:3])
            fields: dict[str, str] = {}
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                fields[name.strip().lower()] = value.strip()
            if not 100 <= status < 200:
                break  # an informational answer (100 Continue) comes before the real one
        keep = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
        body = b""
        if status in (204, 304):
            pass
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailer fields
                    break
                if len(body) + size > MAX_ANSWER_BYTES:
                    keep = False  # not worth reading: the connection goes
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        elif "content-length" in fields:
            length = int(fields["content-length"])
            if length > MAX_ANSWER_BYTES:
                keep = False
            else:
                body = await reader.readexactly(length)
        else:
            keep = False  # delimited by the end of the connection: read what fits
            with contextlib.suppress(ConnectionError):
                body = await reader.read(MAX_ANSWER_BYTES)
        return status, body[:MAX_ERROR_CHARS * 4].decode("utf-8", errors="replace")[:MAX_ERROR_CHARS], keep

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer, _ in idle:
                writer.close()
        self._idle.clear()


@dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt, to be recorded."""

    row: Any
    status_code: int | None
    error: str | None
    retry_in: float | None
    ms: int


class WebhookDeliverer:
    """A process's delivery loop: claim due deliveries, POST them signed, record each attempt.

    Up to `concurrency` requests are in flight at once, refilled as they finish rather than a batch at a time, so
    one slow receiver does not hold the others back; no endpoint has more than `per_endpoint` of them, so an
    endpoint that times out can't take every slot. Outcomes are recorded in batches (one statement for many
    attempts): ten thousand analysis.completed events cost the database a few hundred statements, not twenty
    thousand.
    """

    def __init__(
        self,
        *,
        db: Database,
        max_attempts: int = 8,
        timeout_s: float = 10.0,
        retry_delays_s: Sequence[float] = (5.0, 30.0, 120.0, 600.0, 3600.0),
        poll_s: float = 1.0,
        concurrency: int = 64,
        per_endpoint: int | None = None,
        record_every_s: float = 0.05,
        record_batch: int = 200,
        linger_s: float = 0.1,
    ):
        self.db = db
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.retry_delays_s = tuple(retry_delays_s)
        self.poll_s = poll_s
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint or max(1, concurrency // 2)
        self.record_every_s = record_every_s
        self.record_batch = record_batch
        self.linger_s = linger_s
        self._stopping = False
        self._wake = asyncio.Event()
        self._in_flight: dict[str, int] = {}  # endpoint id -> requests in flight
        self._outcomes: list[Attempt] = []
        self.delivered = 0
        self.failed_attempts = 0

    def retry_in(self, attempts: int) -> float | None:
        """The wait after a failed attempt (1, 2, ...), or None when it was the last one."""
        if attempts >= self.max_attempts:
            return None
        return self.retry_delays_s[min(attempts, len(self.retry_delays_s)) - 1]

    def wake(self) -> None:
        """Look for due deliveries soon (within `linger_s`) rather than at the next poll: an event was written."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info("webhook_deliverer_started", max_attempts=self.max_attempts, timeout_s=self.timeout_s,
                 concurrency=self.concurrency, per_endpoint=self.per_endpoint)
        # A redirect is never followed: the receiver registered this URL, a 3xx is an answer like any non-2xx.
        client = Poster(timeout_s=self.timeout_s, max_idle_per_origin=self.per_endpoint)
        tasks: set[asyncio.Task[Attempt]] = set()
        last_claim = -math.inf
        more = True  # the last claim found deliveries: more may be due
        blocked: set[str] = set()  # endpoints the last claim left out, being full
        oldest_outcome = math.inf
        try:
            while True:
                now = time.monotonic()
                # Claim again when the last claim found some, when a full endpoint it left out has room again, at
                # the poll, or when woken (new events written) but not within `linger_s` of the last claim: events
                # that come one by one are claimed a handful at a time, not a statement each. Slots are refilled a
                # quarter at a time, not one claim per finished request.
                woken = self._wake.is_set() and now - last_claim >= self.linger_s
                due = more or now - last_claim >= self.poll_s or woken
                free = self.concurrency - len(tasks)
                if not self._stopping and due and (free >= max(1, self.concurrency // 4) or not tasks):
                    self._wake.clear()
                    claimed, full = await self._claim(free)
                    last_claim, more, blocked = time.monotonic(), bool(claimed), set(full)
                    for row in claimed:
                        self._in_flight[row["endpoint_id"]] = self._in_flight.get(row["endpoint_id"], 0) + 1
                        tasks.add(asyncio.create_task(self._deliver(client, row)))
                if not tasks:
                    await self._record()
                    if self._stopping:
                        break
                    if more:
                        continue
                    if self._wake.is_set():  # woken within the linger: wait for its end
                        await asyncio.sleep(max(0.0, last_claim + self.linger_s - time.monotonic()))
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, last_claim + self.poll_s - time.monotonic()))
                    continue
                done, tasks = await asyncio.wait(tasks, timeout=min(self.record_every_s, self.poll_s),
                                                 return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    attempt = task.result()
                    endpoint = attempt.row["endpoint_id"]
                    self._in_flight[endpoint] -= 1
                    if not self._in_flight[endpoint]:
                        del self._in_flight[endpoint]
                    if endpoint in blocked and self._room(endpoint) >= self._chunk:
                        blocked.discard(endpoint)
                        more = True
                    if not self._outcomes:
                        oldest_outcome = time.monotonic()
                    self._outcomes.append(attempt)
                if self._outcomes and (len(self._outcomes) >= self.record_batch or not tasks
                                       or time.monotonic() - oldest_outcome >= self.record_every_s):
                    await self._record()
        finally:
            client.close()
        log.info("webhook_deliverer_stopped", delivered=self.delivered)

    @property
    def _chunk(self) -> int:
        return max(1, self.per_endpoint // 4)

    def _room(self, endpoint: str) -> int:
        return self.per_endpoint - self._in_flight.get(endpoint, 0)

    async def _claim(self, limit: int) -> tuple[list[Any], list[str]]:
        """Due deliveries, and the endpoints left out for having too many requests in flight. An endpoint is taken
        again once a quarter of its share is free, so its deliveries too are claimed a few at a time."""
        full = [e for e in self._in_flight if self._room(e) < self._chunk]
        room = {e: self._room(e) for e in self._in_flight if self._room(e) >= self._chunk}
        try:
            # The claim hides a delivery for longer than its request can take.
            rows = await self.db.fetch_all(
                "webhook_deliveries_claim", batch=limit, full=full, room=room,
                per_endpoint=self.per_endpoint, lease_s=self.timeout_s * 2 + 5,
            )
        except Exception as exc:  # the database may be restarting: try again at the next poll
            log.warning("webhook_claim_failed", error=type(exc).__name__, retry_in_s=self.poll_s)
            return [], full
        return rows, full

    async def _deliver(self, client: Poster, row: Any) -> Attempt:
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        if not row["enabled"]:
            error = "endpoint disabled"
        elif row["body"] is None:
            error = "its analysis result no longer exists"
        else:
            keys = [row["secret"], *([row["previous_secret"]] if row["previous_secret"] else [])]
            headers = signed_headers(webhook_id=row["webhook_id"], body=row["body"], secrets_=keys, at=datetime.now(UTC))
            try:
                status_code, text = await client.post(row["url"], row["body"].encode(), headers)
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}: {text}" if text else f"HTTP {status_code}"
            except TimeoutError:
                error = f"timed out after {self.timeout_s:g} s"
            except Exception as exc:  # refused, reset, TLS, not HTTP: this attempt's failure, never the loop's
                error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] if str(exc) else type(exc).__name__
        retry_in = None if error is None or not row["enabled"] or row["body"] is None else self.retry_in(row["attempts"])
        return Attempt(row=row, status_code=status_code, error=error, retry_in=retry_in,
                       ms=round((time.perf_counter() - started) * 1000))

    async def _record(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return
        try:
            await self.db.fetch_all(
                "webhook_deliveries_record",
                ids=[o.row["id"] for o in outcomes],
                attempts=[o.row["attempts"] for o in outcomes],
                delivered=[o.error is None for o in outcomes],
                retry_in_s=[o.retry_in for o in outcomes],
                status_codes=[o.status_code for o in outcomes],
                errors=[o.error for o in outcomes],
            )
        except Exception as exc:  # the claims' leases run out and those deliveries are tried again
            log.warning("webhook_record_failed", deliveries=len(outcomes), error=type(exc).__name__)
            return
        for o in outcomes:
            row = o.row
            if o.error is None:
                self.delivered += 1
                # One line per rerun.finished; analysis.completed comes by the thousand, its lines are debug.
                emit = log.info if row["event_type"] == "rerun.finished" else log.debug
                emit("webhook_delivered", delivery=row["webhook_id"], endpoint=row["endpoint_id"], event_type=row["event_type"],
                     job=row["job_id"], attempt=row["attempts"], status_code=o.status_code, ms=o.ms)
            else:
                self.failed_attempts += 1
                log.warning("webhook_attempt_failed", delivery=row["webhook_id"], endpoint=row["endpoint_id"],
                            event_type=row["event_type"], attempt=row["attempts"], status_code=o.status_code, error=o.error,
                            outcome=f"retry in {o.retry_in:g} s" if o.retry_in is not None else "gave up")
