"""Webhooks when a rerun ends: a workspace's endpoints, and the delivery loop that sends the outbox.

The `rerun.finished` delivery rows are written by a trigger in the job's final transaction (migration 010);
this module signs them per the Standard Webhooks specification and POSTs them, retrying with backoff. The
state lives in the table, so retries survive restarts and any number of processes share the work.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from standardwebhooks.webhooks import Webhook

from graphql_api.db import Database
from graphql_api.errors import BadUserInput, LimitExceeded, not_found
from graphql_api.inputs import check_text

log = structlog.stdlib.get_logger(__name__)

EVENT_TYPES = ("rerun.finished",)
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


async def create_endpoint(
    *, db: Database, workspace_id: int, url: str, description: str, event_types: Sequence[str]
) -> tuple[Any, str]:
    """A new enabled endpoint and its secret, which is shown this once."""
    url = checked_url(url, argument="input.url")
    check_text(description, argument="input.description")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise BadUserInput(f"`input.description` takes at most {MAX_DESCRIPTION_LENGTH} characters.",
                           argument="input.description")
    types = sorted(set(event_types)) or list(EVENT_TYPES)
    async with db.transaction():
        enabled = await db.fetch_val("webhook_endpoints_count_enabled", workspace_id=workspace_id)
        if enabled >= MAX_ENABLED_ENDPOINTS:
            raise LimitExceeded(f"A workspace has at most {MAX_ENABLED_ENDPOINTS} enabled webhook endpoints; disable one first.",
                                limit="max_enabled_webhook_endpoints", value=MAX_ENABLED_ENDPOINTS)
        secret = new_secret()
        row = await db.fetch_one(
            "webhook_endpoint_insert", id="whe_" + secrets.token_hex(10), workspace_id=workspace_id, url=url,
            description=description, event_types=types, secret=secret,
        )
    log.info("webhook_endpoint_created", endpoint=row["id"], workspace=workspace_id)
    return row, secret


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


class WebhookDeliverer:
    """A process's delivery loop: claim due deliveries, POST them signed, record each attempt."""

    def __init__(
        self,
        *,
        db: Database,
        max_attempts: int = 8,
        timeout_s: float = 10.0,
        retry_delays_s: Sequence[float] = (5.0, 30.0, 120.0, 600.0, 3600.0),
        poll_s: float = 1.0,
        concurrency: int = 8,
    ):
        self.db = db
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.retry_delays_s = tuple(retry_delays_s)
        self.poll_s = poll_s
        self.concurrency = concurrency
        self._stopping = False
        self._wake = asyncio.Event()
        self.delivered = 0
        self.failed_attempts = 0

    def retry_in(self, attempts: int) -> float | None:
        """The wait after a failed attempt (1, 2, ...), or None when it was the last one."""
        if attempts >= self.max_attempts:
            return None
        return self.retry_delays_s[min(attempts, len(self.retry_delays_s)) - 1]

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info("webhook_deliverer_started", max_attempts=self.max_attempts, timeout_s=self.timeout_s)
        # Never follow a redirect: the receiver registered this URL, a 3xx is an answer like any non-2xx.
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False) as client:
            while not self._stopping:
                try:
                    # The claim hides a delivery for longer than its request can take.
                    claimed = await self.db.fetch_all(
                        "webhook_deliveries_claim", batch=self.concurrency, lease_s=self.timeout_s * 2 + 5
                    )
                except Exception as exc:  # the database may be restarting: try again at the next poll
                    log.warning("webhook_claim_failed", error=type(exc).__name__, retry_in_s=self.poll_s)
                    claimed = []
                if claimed:
                    await asyncio.gather(*(self._deliver(client, row) for row in claimed))
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
        log.info("webhook_deliverer_stopped", delivered=self.delivered)

    async def _deliver(self, client: httpx.AsyncClient, row: Any) -> None:
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        if not row["enabled"]:
            error = "endpoint disabled"
        else:
            keys = [row["secret"], *([row["previous_secret"]] if row["previous_secret"] else [])]
            headers = signed_headers(webhook_id=row["webhook_id"], body=row["body"], secrets_=keys, at=datetime.now(UTC))
            try:
                response = await client.post(row["url"], content=row["body"].encode(), headers=headers)
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}: {response.text[:MAX_ERROR_CHARS]}" if response.text else f"HTTP {status_code}"
            except httpx.TimeoutException:
                error = f"timed out after {self.timeout_s:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or type(exc).__name__
        delivered = error is None
        retry_in = None if delivered or not row["enabled"] else self.retry_in(row["attempts"])
        try:
            await self.db.fetch_one(
                "webhook_delivery_record", id=row["id"], attempts=row["attempts"], delivered=delivered,
                retry_in_s=retry_in, status_code=status_code, error=error,
            )
        except Exception as exc:  # the claim's lease runs out and the delivery is tried again
            log.warning("webhook_record_failed", delivery=row["webhook_id"], error=type(exc).__name__)
            return
        ms = round((time.perf_counter() - started) * 1000)
        if delivered:
            self.delivered += 1
            log.info("webhook_delivered", delivery=row["webhook_id"], endpoint=row["endpoint_id"], job=row["job_id"],
                     attempt=row["attempts"], status_code=status_code, ms=ms)
        else:
            self.failed_attempts += 1
            log.warning("webhook_attempt_failed", delivery=row["webhook_id"], endpoint=row["endpoint_id"],
                        attempt=row["attempts"], status_code=status_code, error=error,
                        outcome=f"retry in {retry_in:g} s" if retry_in is not None else "gave up")
