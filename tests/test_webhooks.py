"""Webhooks when a rerun ends: a local receiver verifies every delivery with the standardwebhooks library, fails
the first attempts, and the event arrives signed, with the job's figures, after retries that the API shows."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import data, error_codes, running_api
from tests.factories import call, load, voice_agent
from tests.reruns_helpers import JOB, RERUN, UPDATE, wait_final

FAST = {"webhook_retry_delays_s": (0.2, 0.4), "webhook_poll_s": 0.05, "webhook_timeout_s": 2.0}
RECORDS = [voice_agent(version=0, published=True), voice_agent(version=1, published=False)] + [
    call(f"call_{i}", minute=i) for i in range(3)
]

CREATE = """mutation($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { secret endpoint { id url description eventTypes enabled createdAt disabledAt } } }"""
DISABLE = "mutation($id: ID!) { disableWebhookEndpoint(id: $id) { id enabled disabledAt } }"
ROTATE = "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret endpoint { id secretRotatedAt } } }"
ENDPOINTS = "{ webhookEndpoints { id url enabled eventTypes } }"
DELIVERIES = """query($id: ID!, $after: String) { webhookDeliveries(endpointId: $id, first: 10, after: $after) {
  nodes { id eventType status attempts jobId payload lastStatusCode lastError lastAttemptAt nextAttemptAt createdAt deliveredAt }
  pageInfo { hasNextPage endCursor } } }"""
CANCEL = "mutation($id: ID!) { cancelRerun(jobId: $id) { id status } }"


class Receiver:
    """An HTTP endpoint on loopback: answers `fail_first` requests with `fail_status`, then 200; verifies each one."""

    def __init__(self, *, fail_first: int = 0, fail_status: int = 500, headers: dict[str, str] | None = None):
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.extra_headers = headers or {}
        self.secrets: list[str] = []  # every secret the signature must verify with
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = []
                for secret in receiver.secrets:
                    try:
                        Webhook(secret).verify(body, headers)
                        verified.append(True)
                    except WebhookVerificationError:
                        verified.append(False)
                n = len(receiver.requests)
                receiver.requests.append({"at": time.time(), "path": self.path, "headers": headers,
                                          "body": body.decode(), "verified": verified})
                status = receiver.fail_status if n < receiver.fail_first else 200
                self.send_response(status)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    async def wait_for(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} of {count} requests arrived: {self.requests}")
            await asyncio.sleep(0.02)
        return self.requests


@pytest.fixture
def receivers() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


async def _setup(api: Any) -> str:
    key = await api.key_for("acme")
    await load(api, "acme", RECORDS)
    return key


async def _endpoint(api: Any, key: str, receiver: Receiver, description: str = "") -> tuple[str, str]:
    created = data(await api.gql(CREATE, {"input": {"url": receiver.url, "description": description}}, key=key))
    payload = created["createWebhookEndpoint"]
    receiver.secrets.append(payload["secret"])
    return payload["endpoint"]["id"], payload["secret"]


async def _deliveries(api: Any, key: str, endpoint_id: str) -> list[dict]:
    return data(await api.gql(DELIVERIES, {"id": endpoint_id}, key=key))["webhookDeliveries"]["nodes"]


async def test_a_finished_rerun_is_delivered_signed_with_its_figures_after_retries(db_url: str, receivers: Any) -> None:
    receiver = receivers(fail_first=2)
    async with running_api(db_url, **FAST) as api:
        key = await _setup(api)
        endpoint_id, secret = await _endpoint(api, key, receiver, "ops alerts")
        assert secret.startswith("whsec_")
        # A required field the offline analyzer leaves empty makes every call unsuccessful: outcomes flip.
        await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"dataFields": [
            {"name": "party_size", "type": "NUMBER", "required": True}]}}, key=key)
        job_id = data(await api.gql(RERUN, {"input": {"callIds": ["call_0", "call_1", "call_2"]}}, key=key))[
            "rerunAnalysis"]["job"]["id"]

        # The outbox row commits with the job's final state: every snapshot that shows the job final shows it.
        conn = await asyncpg.connect(dsn=db_url)
        try:
            while True:
                row = await conn.fetchrow(
                    "SELECT j.status, j.finished_at, (SELECT count(*) FROM webhook_deliveries d WHERE d.job_id = j.job_id) AS n "
                    "FROM rerun_jobs j WHERE j.job_id = $1", job_id)
                final = row["status"] in ("SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED")
                assert row["n"] == (1 if final else 0), dict(row)
                if final:
                    break
                await asyncio.sleep(0.005)
        finally:
            await conn.close()
        finished_at = row["finished_at"].timestamp()
        job = await wait_final(api, key, job_id)

        requests = await receiver.wait_for(3)
        await asyncio.sleep(0.3)
        assert len(requests) == 3, "delivered once accepted: no more requests"
        assert all(r["verified"] == [True] for r in requests), requests
        assert len({r["headers"]["webhook-id"] for r in requests}) == 1, "the same webhook-id on every attempt"
        assert all(r["headers"]["webhook-signature"].startswith("v1,") for r in requests)
        gaps = [b["at"] - a["at"] for a, b in zip(requests, requests[1:])]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # the backoff, from the settings
        event = json.loads(requests[-1]["body"])
        items = job["items"]["nodes"]
        assert event["type"] == "rerun.finished"
        assert event["data"] == {
            "rerun": True,
            "job_id": job_id,
            "agent_id": "agent_voice1",
            "kind": "CALL",
            "mode": "INTERACTIVE",
            "status": job["status"],
            "total": 3, "succeeded": job["succeeded"], "failed": job["failed"], "canceled": job["canceled"],
            "skipped": 0,
            "cost_usd": job["costUsd"],
            "estimated_cost_usd": job["estimatedCostUsd"],
            "config_version": 1,
            "created_at": event["data"]["created_at"],
            "started_at": event["data"]["started_at"],
            "finished_at": event["data"]["finished_at"],
            "impact": event["data"]["impact"],
        }
        assert datetime.fromisoformat(event["data"]["finished_at"]).timestamp() == pytest.approx(finished_at, abs=1e-3)
        flipped = sum(1 for i in items if i["status"] == "SUCCEEDED")
        assert event["data"]["impact"]["compared"] == flipped == 3
        previous = await _successful(db_url, job_id)
        assert event["data"]["impact"]["flipped_to_unsuccessful"] == sum(1 for p, c in previous if p and not c) == 3
        assert event["data"]["impact"]["flipped_to_successful"] == 0

        [delivery] = await _deliveries(api, key, endpoint_id)
        assert delivery["id"] == requests[0]["headers"]["webhook-id"] and delivery["id"].startswith("msg_")
        assert (delivery["status"], delivery["attempts"], delivery["lastStatusCode"], delivery["lastError"]) == (
            "DELIVERED", 3, 200, None)
        assert delivery["eventType"] == "RERUN_FINISHED" and delivery["jobId"] == job_id
        assert delivery["payload"] == event and delivery["deliveredAt"] and delivery["nextAttemptAt"] is None
        latency_ms = (requests[0]["at"] - finished_at) * 1000
        print(f"\nfirst attempt {latency_ms:.0f} ms after the job's final commit (poll {FAST['webhook_poll_s']} s); "
              f"delivered {(requests[-1]['at'] - finished_at) * 1000:.0f} ms after it, at the third attempt")
        assert latency_ms < 2000


async def _successful(db_url: str, job_id: str) -> list[tuple[bool | None, bool | None]]:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        rows = await conn.fetch(
            "SELECT p.successful AS before, c.successful AS after FROM rerun_items i "
            "JOIN analysis_results c ON c.id = i.result_id JOIN analysis_results p ON p.id = i.previous_result_id "
            "WHERE i.job_id = $1", job_id)
        return [(r["before"], r["after"]) for r in rows]
    finally:
        await conn.close()


async def test_a_canceled_rerun_is_sent_to_enabled_endpoints_only_even_by_a_later_process(db_url: str, receivers: Any) -> None:
    enabled, disabled = receivers(), receivers()
    # No workers here: the job stays queued until it is canceled, and no delivery loop runs.
    async with running_api(db_url, run_workers=False, **FAST) as api:
        key = await _setup(api)
        enabled_id, old_secret = await _endpoint(api, key, enabled)
        disabled_id, _ = await _endpoint(api, key, disabled)
        off = data(await api.gql(DISABLE, {"id": disabled_id}, key=key))["disableWebhookEndpoint"]
        assert off["enabled"] is False and off["disabledAt"]
        again = data(await api.gql(DISABLE, {"id": disabled_id}, key=key))["disableWebhookEndpoint"]
        assert again["disabledAt"] == off["disabledAt"], "disabling twice changes nothing"
        rotated = data(await api.gql(ROTATE, {"id": enabled_id}, key=key))["rotateWebhookSecret"]
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != old_secret
        assert rotated["endpoint"]["secretRotatedAt"]
        enabled.secrets.append(rotated["secret"])  # both verify while the old one is in its grace period

        job_id = data(await api.gql(RERUN, {"input": {"callIds": ["call_0", "call_1"]}}, key=key))["rerunAnalysis"]["job"]["id"]
        assert data(await api.gql(CANCEL, {"id": job_id}, key=key))["cancelRerun"]["status"] == "CANCELED"
        [pending] = await _deliveries(api, key, enabled_id)
        assert (pending["status"], pending["attempts"], pending["lastStatusCode"]) == ("PENDING", 0, None)
        assert await _deliveries(api, key, disabled_id) == []
        listed = data(await api.gql(ENDPOINTS, key=key))["webhookEndpoints"]
        assert [(e["id"], e["enabled"]) for e in listed] == [(disabled_id, False), (enabled_id, True)]

    # The outbox is in the database: the next process that runs workers sends what the first one left.
    async with running_api(db_url, **FAST) as api:
        [request] = await enabled.wait_for(1)
        event = json.loads(request["body"])
        assert event["data"]["status"] == "CANCELED" and event["data"]["job_id"] == job_id
        assert (event["data"]["canceled"], event["data"]["succeeded"], event["data"]["cost_usd"]) == (2, 0, "0.00000000")
        assert event["data"]["impact"]["compared"] == 0
        assert request["verified"] == [True, True] and len(request["headers"]["webhook-signature"].split(" ")) == 2
        for _ in range(100):
            [delivered] = await _deliveries(api, key, enabled_id)
            if delivered["status"] == "DELIVERED":
                break
            await asyncio.sleep(0.02)
        assert (delivered["status"], delivered["attempts"], delivered["lastStatusCode"]) == ("DELIVERED", 1, 200)
        await asyncio.sleep(0.3)
        assert disabled.requests == []


async def test_a_delivery_gives_up_after_the_last_attempt_and_never_follows_a_redirect(db_url: str, receivers: Any) -> None:
    target = receivers()
    redirecting = receivers(fail_first=10**6, fail_status=307, headers={"location": target.url})
    async with running_api(db_url, webhook_max_attempts=2, **FAST) as api:
        key = await _setup(api)
        endpoint_id, _ = await _endpoint(api, key, redirecting)
        job_id = data(await api.gql(RERUN, {"input": {"callIds": ["call_0"]}}, key=key))["rerunAnalysis"]["job"]["id"]
        await wait_final(api, key, job_id)
        await redirecting.wait_for(2)
        for _ in range(100):
            [delivery] = await _deliveries(api, key, endpoint_id)
            if delivery["status"] != "PENDING":
                break
            await asyncio.sleep(0.02)
        assert (delivery["status"], delivery["attempts"], delivery["lastStatusCode"]) == ("FAILED", 2, 307)
        assert delivery["lastError"].startswith("HTTP 307") and delivery["nextAttemptAt"] is None
        await asyncio.sleep(0.5)
        assert len(redirecting.requests) == 2 and target.requests == []


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "https://", "javascript:alert(1)",
                                 "https://user:pw@example.com/", "https://example.com/" + "a" * 2100,
                                 "http://example.com:99999/"])
async def test_an_endpoint_url_must_be_http_or_https(api: Any, url: str) -> None:
    key = await api.key_for("acme")
    result = await api.gql(CREATE, {"input": {"url": url}}, key=key)
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    assert result["errors"][0]["extensions"]["argument"] == "input.url"
    assert data(await api.gql(ENDPOINTS, key=key))["webhookEndpoints"] == []


async def test_endpoints_of_another_workspace_answer_as_unknown_ones(api: Any, receivers: Any) -> None:
    own, other = await api.key_for("acme"), await api.key_for("globex")
    foreign, _ = await _endpoint(api, other, receivers())
    unknown = "whe_00000000000000000000"
    for document, variables in [(DISABLE, {}), (ROTATE, {}), (DELIVERIES, {})]:
        answers = []
        for ident in (foreign, unknown):
            result = await api.gql(document, {"id": ident, **variables}, key=own)
            assert error_codes(result) == ["NOT_FOUND"] and result["data"] is None, result
            answers.append(result["errors"][0]["message"].replace(ident, "<id>"))
        assert answers[0] == answers[1]
    assert data(await api.gql(ENDPOINTS, key=own))["webhookEndpoints"] == []
    [still] = data(await api.gql(ENDPOINTS, key=other))["webhookEndpoints"]
    assert still["enabled"] is True
