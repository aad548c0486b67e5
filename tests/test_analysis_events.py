"""analysis.completed: every analysis that commits reaches the endpoints that take it, signed (checked with the
standardwebhooks library), in this API's shape or Retell's call_analyzed / chat_analyzed, saying which trigger and job
produced it; the delivery rows commit with the result or not at all; and the analysisCompleted subscription streams an
agent's analyses over a real WebSocket, never another agent's or workspace's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from graphql_api.reruns.webhooks import Poster, ResponseError
from graphql_api.testing.processes import ServerProcess, cli
from tests.conftest import data, error_codes, running_api
from tests.factories import call, chat, chat_agent, load, voice_agent
from tests.reruns_helpers import RERUN, wait_final
from tests.test_webhooks import FAST, Receiver, receivers  # noqa: F401 - the fixture

CREATE = """mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  secret endpoint { id eventTypes payloadFormat includePreviews } } }"""
UPDATE = """mutation($id: ID!, $input: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(id: $id, input: $input) {
  id eventTypes payloadFormat includePreviews description } }"""
DELIVERIES = """query($id: ID!) { webhookDeliveries(endpointId: $id, first: 100) { nodes { id eventType status jobId payload } } }"""
PREVIEW = "mutation($id: ID!) { previewAnalysis(conversationId: $id) { id trigger } }"
CALL = """query($id: ID!) { call(id: $id) { id analysis { id trigger model summary successful userSentiment inVoicemail customData
  costUsd agentVersion { version } } } }"""
CHAT = """query($id: ID!) { chat(id: $id) { id analysis { id trigger summary successful userSentiment customData } } }"""

CALL_RECORDS = [
    voice_agent(version=0, published=True), voice_agent(version=1, published=False),
    call("call_0", minute=0, metadata={"crm_id": "A-17"}, disconnection_reason="user_hangup",
         utterances=[{"role": "agent", "content": "Hello, how can I help?",
                      "words": [{"word": "Hello,", "start": 0.1, "end": 0.4}]},
                     {"role": "user", "content": "I'd like to book a cleaning, thanks so much."}]),
    call("call_1", minute=1),
]
CHAT_RECORDS = [chat_agent(version=0, published=True), chat_agent(version=1, published=False), chat("chat_0", minute=2)]


async def _endpoint(api: Any, key: str, receiver: Receiver, **input: Any) -> str:
    created = data(await api.gql(CREATE, {"input": {"url": receiver.url, **input}}, key=key))["createWebhookEndpoint"]
    receiver.secrets.append(created["secret"])
    return created["endpoint"]["id"]


def _events(receiver: Receiver) -> list[dict[str, Any]]:
    assert all(r["verified"] == [True] for r in receiver.requests), "every delivery verifies with standardwebhooks"
    return [json.loads(r["body"]) for r in receiver.requests]


async def _settle(*receivers_: Receiver, counts: list[int], timeout: float = 15) -> None:
    for receiver, count in zip(receivers_, counts):
        await receiver.wait_for(count, timeout=timeout)
    await asyncio.sleep(0.3)  # and nothing more comes
    assert [len(r.requests) for r in receivers_] == counts, [[json.loads(q["body"]).get("type") or json.loads(
        q["body"]).get("event") for q in r.requests] for r in receivers_]


def _ms(instant: str) -> int:
    return round(datetime.fromisoformat(instant).timestamp() * 1000)


async def test_every_analysis_reaches_the_endpoints_that_take_it_in_their_shape(db_url: str, receivers: Any) -> None:
    api_hooks, retell_hooks, previews, reruns_only = receivers(), receivers(), receivers(), receivers()
    async with running_api(db_url, **FAST) as api:
        key = await api.key_for("acme")
        api_id = await _endpoint(api, key, api_hooks, eventTypes=["ANALYSIS_COMPLETED", "RERUN_FINISHED"])
        # A RETELL endpoint takes analysis.completed unless told otherwise; an API one, rerun.finished.
        await _endpoint(api, key, retell_hooks, payloadFormat="RETELL")
        await _endpoint(api, key, previews, eventTypes=["ANALYSIS_COMPLETED"], includePreviews=True)
        reruns_only_id = await _endpoint(api, key, reruns_only)
        listed = {e["id"]: e for e in data(await api.gql(
            "{ webhookEndpoints { id eventTypes payloadFormat includePreviews } }", key=key))["webhookEndpoints"]}
        assert listed[reruns_only_id] == {"id": reruns_only_id, "eventTypes": ["RERUN_FINISHED"], "payloadFormat": "API",
                                          "includePreviews": False}

        # Initial analyses, at import (the offline analyzer): one event per conversation.
        await load(api, "acme", CALL_RECORDS + CHAT_RECORDS)
        await _settle(api_hooks, retell_hooks, previews, counts=[3, 3, 3])
        initial = {e["data"]["conversation"]["id"]: e for e in _events(api_hooks)}
        assert set(initial) == {"call_0", "call_1", "chat_0"}
        assert {e["data"]["trigger"] for e in initial.values()} == {"INITIAL"}
        assert all(e["data"]["rerun_job_id"] is None for e in initial.values())

        # The API shape, against what the API itself answers.
        event = initial["call_0"]
        current = data(await api.gql(CALL, {"id": "call_0"}, key=key))["call"]["analysis"]
        assert event["type"] == "analysis.completed" and event["timestamp"] == event["data"]["analysis"]["created_at"]
        assert event["data"]["analysis"] == {
            "result_id": current["id"], "agent_version": 0, "model": current["model"], "summary": current["summary"],
            "successful": current["successful"], "user_sentiment": current["userSentiment"],
            "in_voicemail": current["inVoicemail"], "custom_data": current["customData"], "output_sources": {},
            "evaluation": None, "rationale": None,
            "input_tokens": event["data"]["analysis"]["input_tokens"], "output_tokens": event["data"]["analysis"]["output_tokens"],
            "cost_usd": current["costUsd"], "charged": event["data"]["analysis"]["charged"], "current": True,
            "created_at": event["data"]["analysis"]["created_at"],
        }
        conversation = event["data"]["conversation"]
        assert conversation == {
            "id": "call_0", "kind": "CALL", "agent_id": "agent_voice1", "agent_version": 0, "type": "phone_call",
            "status": "ended", "direction": "inbound", "from_number": "+14155550100", "to_number": "+14155550199",
            "started_at": conversation["started_at"], "ended_at": conversation["ended_at"], "duration_ms": 45_000,
            "disconnection_reason": "user_hangup", "transcript": conversation["transcript"],
            "metadata": {"crm_id": "A-17"},
        }
        assert _ms(conversation["ended_at"]) - _ms(conversation["started_at"]) == 45_000
        assert "Hello, how can I help?" in conversation["transcript"]

        # Retell's call_analyzed: the call in Retell's field names, its analysis in call_analysis.
        retell = {(e.get("call") or e.get("chat"))["call_id" if "call" in e else "chat_id"]: e for e in _events(retell_hooks)}
        body = retell["call_0"]
        assert set(body) == {"event", "call", "analysis_run"} and body["event"] == "call_analyzed"
        assert body["call"] == {
            "call_id": "call_0", "agent_id": "agent_voice1", "agent_version": 0, "call_type": "phone_call",
            "call_status": "ended", "direction": "inbound", "from_number": "+14155550100", "to_number": "+14155550199",
            "start_timestamp": _ms(conversation["started_at"]), "end_timestamp": _ms(conversation["ended_at"]),
            "duration_ms": 45_000, "disconnection_reason": "user_hangup", "transcript": conversation["transcript"],
            "transcript_object": [
                {"role": "agent", "content": "Hello, how can I help?", "words": [{"word": "Hello,", "start": 0.1, "end": 0.4}]},
                {"role": "user", "content": "I'd like to book a cleaning, thanks so much.", "words": []}],
            "metadata": {"crm_id": "A-17"},
            "call_analysis": {"call_summary": current["summary"], "in_voicemail": current["inVoicemail"],
                              "user_sentiment": current["userSentiment"].title(), "call_successful": current["successful"],
                              "custom_analysis_data": current["customData"]},
        }
        assert body["analysis_run"] == {"result_id": current["id"], "trigger": "INITIAL", "rerun_job_id": None,
                                        "agent_version": 0, "model": current["model"],
                                        "created_at": event["data"]["analysis"]["created_at"]}
        assert "disconnection_reason" not in retell["call_1"]["call"], "what a call does not have is left out"

        # Retell's chat_analyzed.
        chat_now = data(await api.gql(CHAT, {"id": "chat_0"}, key=key))["chat"]["analysis"]
        body = retell["chat_0"]
        assert set(body) == {"event", "chat", "analysis_run"} and body["event"] == "chat_analyzed"
        assert body["chat"] == {
            "chat_id": "chat_0", "agent_id": "agent_chat1", "version": 0, "chat_type": "api_chat", "chat_status": "ended",
            "start_timestamp": body["chat"]["start_timestamp"], "end_timestamp": body["chat"]["start_timestamp"] + 120_000,
            "transcript": initial["chat_0"]["data"]["conversation"]["transcript"],
            "message_with_tool_calls": [{"role": "user", "content": "I was charged twice."},
                                        {"role": "agent", "content": "I've issued a refund for the duplicate charge."}],
            "metadata": {},
            "chat_analysis": {"chat_summary": chat_now["summary"], "user_sentiment": chat_now["userSentiment"].title(),
                              "chat_successful": chat_now["successful"], "custom_analysis_data": chat_now["customData"]},
        }
        assert initial["chat_0"]["data"]["analysis"]["in_voicemail"] is None
        assert reruns_only.requests == []

        # A rerun: one event per conversation with its job, and rerun.finished to the endpoints taking that.
        for r in (api_hooks, retell_hooks, previews):
            r.requests.clear()
        job_id = data(await api.gql(RERUN, {"input": {"callIds": ["call_0", "call_1"]}}, key=key))["rerunAnalysis"]["job"]["id"]
        await wait_final(api, key, job_id)
        await _settle(api_hooks, retell_hooks, previews, reruns_only, counts=[3, 2, 2, 1])
        by_type: dict[str, list[dict]] = {}
        for e in _events(api_hooks):
            by_type.setdefault(e["type"], []).append(e)
        assert len(by_type["rerun.finished"]) == 1 and by_type["rerun.finished"][0]["data"]["job_id"] == job_id
        reruns = by_type["analysis.completed"]
        assert {e["data"]["conversation"]["id"] for e in reruns} == {"call_0", "call_1"}
        assert all(e["data"]["trigger"] == "RERUN" and e["data"]["rerun_job_id"] == job_id for e in reruns)
        assert all(e["data"]["analysis"]["agent_version"] == 1 and e["data"]["analysis"]["current"] for e in reruns)
        assert all(e["analysis_run"]["trigger"] == "RERUN" and e["analysis_run"]["rerun_job_id"] == job_id
                   and e["analysis_run"]["agent_version"] == 1 for e in _events(retell_hooks))
        assert [json.loads(r["body"])["type"] for r in reruns_only.requests] == ["rerun.finished"]
        nodes = data(await api.gql(DELIVERIES, {"id": api_id}, key=key))["webhookDeliveries"]["nodes"]
        assert sorted(((n["eventType"], n["jobId"]) for n in nodes), key=str) == sorted(
            [("ANALYSIS_COMPLETED", None)] * 3 + [("ANALYSIS_COMPLETED", job_id)] * 2 + [("RERUN_FINISHED", job_id)], key=str)
        assert all(n["status"] == "DELIVERED" for n in nodes)

        # A preview goes only where previews were asked for, and says it is not current.
        for r in (api_hooks, retell_hooks, previews):
            r.requests.clear()
        preview = data(await api.gql(PREVIEW, {"id": "chat_0"}, key=key))["previewAnalysis"]
        await _settle(api_hooks, retell_hooks, previews, counts=[0, 0, 1])
        [event] = _events(previews)
        assert event["data"]["trigger"] == "PREVIEW" and event["data"]["analysis"]["result_id"] == preview["id"]
        assert event["data"]["analysis"]["current"] is False and event["data"]["conversation"]["kind"] == "CHAT"


async def test_an_endpoint_changes_what_it_takes_and_answers_for_its_workspace_only(db_url: str, receivers: Any) -> None:
    hooks = receivers()
    async with running_api(db_url, **FAST) as api:
        key, other = await api.key_for("acme"), await api.key_for("globex")
        endpoint_id = await _endpoint(api, key, hooks)
        await load(api, "acme", CALL_RECORDS[:3])
        await asyncio.sleep(0.3)
        assert hooks.requests == [], "an API endpoint made without eventTypes takes rerun.finished only"
        changed = data(await api.gql(UPDATE, {"id": endpoint_id, "input": {
            "eventTypes": ["ANALYSIS_COMPLETED"], "payloadFormat": "RETELL", "description": "crm"}}, key=key))
        assert changed["updateWebhookEndpoint"] == {"id": endpoint_id, "eventTypes": ["ANALYSIS_COMPLETED"],
                                                    "payloadFormat": "RETELL", "includePreviews": False, "description": "crm"}
        await api.gql(PREVIEW, {"id": "call_0"}, key=key)
        job_id = data(await api.gql(RERUN, {"input": {"callIds": ["call_0"]}}, key=key))["rerunAnalysis"]["job"]["id"]
        await wait_final(api, key, job_id)
        await _settle(hooks, counts=[1])
        assert _events(hooks)[0]["event"] == "call_analyzed" and _events(hooks)[0]["analysis_run"]["rerun_job_id"] == job_id

        refused = await api.gql(UPDATE, {"id": endpoint_id, "input": {"eventTypes": []}}, key=key)
        assert error_codes(refused) == ["BAD_USER_INPUT"]
        for who, ident in ((other, endpoint_id), (key, "whe_00000000000000000000")):
            result = await api.gql(UPDATE, {"id": ident, "input": {"includePreviews": True}}, key=who)
            assert error_codes(result) == ["NOT_FOUND"] and result["data"] is None


async def test_delivery_rows_commit_with_the_result_or_not_at_all(db_url: str) -> None:
    async with running_api(db_url, run_workers=False) as api:
        workspace = await api.workspace_id("acme")
        await load(api, "acme", CALL_RECORDS[:3])
    conn = await asyncpg.connect(dsn=db_url)
    try:
        await conn.execute(
            "INSERT INTO webhook_endpoints (id, workspace_id, url, event_types, secret) "
            "VALUES ('whe_0000000000000000000a', $1, 'http://127.0.0.1:9/', '{analysis.completed}', 'whsec_x')", workspace)
        record = ("SELECT id FROM record_analysis_result($1, 'call_0', 'INITIAL', 'agent_voice1', 0, 'offline', 's', true, "
                  "'NEUTRAL', false, '{}'::jsonb, 1, 1, 0, true, 'initial', NULL)")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("DELETE FROM analysis_results WHERE conversation_id = 'call_0'")
        result_id = await conn.fetchval(record, workspace)
        # Inside the result's transaction the delivery is there already...
        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE analysis_result_id = $1", result_id) == 1
        await tx.rollback()
        # ...and a rolled-back result leaves none behind.
        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
        async with conn.transaction():
            await conn.execute("DELETE FROM analysis_results WHERE conversation_id = 'call_0'")
            result_id = await conn.fetchval(record, workspace)
        [row] = await conn.fetch("SELECT event_type, status, job_id, analysis_result_id, payload FROM webhook_deliveries")
        assert (row["event_type"], row["status"], row["job_id"], row["analysis_result_id"]) == (
            "analysis.completed", "PENDING", None, result_id)
        assert row["payload"] is None, "the body is built when the delivery is first sent, out of the result's transaction"
        body = json.loads(await conn.fetchval("SELECT analysis_delivery_payload($1, 'API')", result_id))
        assert body["data"]["analysis"]["result_id"] == str(result_id)
        # Endpoints made before migration 014, or without saying, keep the API shape and no previews.
        defaults = await conn.fetchrow("SELECT payload_format, include_previews FROM webhook_endpoints")
        assert tuple(defaults) == ("API", False)
    finally:
        await conn.close()


class Hanging:
    """An endpoint that accepts every request and answers none in time; counts how many are open at once."""

    def __init__(self, hang_s: float):
        self.open = self.max_open = 0
        self.secrets: list[str] = []
        lock = threading.Lock()
        hanging = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                with lock:
                    hanging.open += 1
                    hanging.max_open = max(hanging.max_open, hanging.open)
                time.sleep(hang_s)
                with lock:
                    hanging.open -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.request_queue_size = 64
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    endpoint = Hanging(hang_s=3.0)
    yield endpoint
    endpoint.close()


async def test_an_endpoint_that_hangs_takes_at_most_its_share_of_the_delivery_slots(
    db_url: str, receivers: Any, hanging: Hanging
) -> None:
    healthy = receivers()
    calls = [call(f"call_{i}", minute=i) for i in range(24)]
    async with running_api(db_url, **{**FAST, "webhook_timeout_s": 2.5}) as api:
        deliverer = api.services.webhooks
        deliverer.concurrency, deliverer.per_endpoint = 8, 4  # fewer slots than events, to see the share kept
        key = await api.key_for("acme")
        await _endpoint(api, key, hanging, eventTypes=["ANALYSIS_COMPLETED"])
        await _endpoint(api, key, healthy, eventTypes=["ANALYSIS_COMPLETED"])
        started = time.monotonic()
        await load(api, "acme", CALL_RECORDS[:2] + calls)
        await healthy.wait_for(24, timeout=10)
        assert time.monotonic() - started < 2.5, "the healthy endpoint did not wait for the hanging one's timeouts"
        await asyncio.sleep(0.3)
        # It holds requests open up to its share of the slots, never more.
        assert hanging.max_open == deliverer.per_endpoint


async def test_the_delivery_client_reads_every_framing_and_retries_a_closed_kept_connection() -> None:
    answers = {
        "/chunked": b"HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbusy\r\n5\r\n, try\r\n0\r\n\r\n",
        "/close": b"HTTP/1.0 503 Unavailable\r\n\r\ncome back later",
        "/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        "/ok": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "/garbage": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        "/slow": None,
    }
    served: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                path = head.split(" ")[1]
                length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
                await reader.readexactly(length)
                served.append(path)
                if answers[path] is None:
                    await asyncio.sleep(5)
                writer.write(answers[path])
                await writer.drain()
                if path in ("/close", "/garbage") or path == "/ok" and served.count("/ok") == 1:
                    break  # the first /ok keeps nothing: the client's kept connection is dead when it comes back
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    poster = Poster(timeout_s=0.5)
    try:
        assert await poster.post(base + "/chunked", b"{}", {}) == (500, "busy, try")
        assert await poster.post(base + "/close", b"{}", {}) == (503, "come back later")
        assert await poster.post(base + "/continue", b"{}", {}) == (204, "")
        assert await poster.post(base + "/ok", b"{}", {}) == (200, "ok")
        await asyncio.sleep(0.05)
        assert await poster.post(base + "/ok", b"{}", {}) == (200, "ok"), "sent again on a new connection"
        with pytest.raises(ResponseError):
            await poster.post(base + "/garbage", b"{}", {})
        with pytest.raises(TimeoutError):
            await poster.post(base + "/slow", b"{}", {})
        with pytest.raises(OSError):
            await poster.post("http://127.0.0.1:9/refused", b"{}", {})
    finally:
        poster.close()
        server.close()


# ---- the subscription, over real WebSockets ---------------------------------------------------------------------

SUBSCRIPTION = """subscription($agent: ID!, $previews: Boolean!) { analysisCompleted(agentId: $agent, includePreviews: $previews) {
  analysis { trigger rerunJobId conversationId result { id trigger summary agentVersion { version } } call { id callStatus }
             chat { id } } } }"""


def _import(db_url: str, tmp_path: Path, workspace: str, records: list[dict]) -> str:
    created = cli("create-api-key", "--workspace", workspace, db_url=db_url, data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    path = tmp_path / f"{workspace}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    imported = cli("import", str(path), "--workspace", workspace, db_url=db_url, data_dir=tmp_path)
    assert imported.returncode == 0, imported.stderr
    return created.stdout.strip().splitlines()[-1]


def _ws(server: ServerProcess, key: str) -> Client:
    transport = WebsocketsTransport(url=server.base_url.replace("http", "ws") + "/graphql",
                                    init_payload={"Authorization": f"Bearer {key}"},
                                    subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    return Client(transport=transport, fetch_schema_from_transport=False)


async def _post(server: ServerProcess, key: str, query: str, variables: dict) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        body = (await client.post("/graphql", json={"query": query, "variables": variables},
                                  headers={"Authorization": f"Bearer {key}"})).json()
    assert not body.get("errors"), body
    return body["data"]


async def _collect(server: ServerProcess, key: str, agent: str, previews: bool, into: list[dict], live: asyncio.Event) -> None:
    async with _ws(server, key) as session:
        request = GraphQLRequest(SUBSCRIPTION, variable_values={"agent": agent, "previews": previews})
        async for event in session.subscribe(request):
            if event["analysisCompleted"]["analysis"] is None:
                assert not live.is_set(), "only the first event says the subscription is live"
                live.set()
            else:
                assert live.is_set()
                into.append(event["analysisCompleted"]["analysis"])


async def test_a_subscriber_sees_each_analysis_of_its_agent_as_it_commits_and_nothing_else(db_url, tmp_path) -> None:
    agents = [voice_agent(version=0), voice_agent(version=1, published=False),
              voice_agent("agent_voice2", version=0), voice_agent("agent_voice2", version=1, published=False)]
    own = [call(f"call_{i}", minute=i) for i in range(5)]
    neighbour = [call(f"other_{i}", agent_id="agent_voice2", minute=i) for i in range(3)]
    key = _import(db_url, tmp_path, "acme", agents + own + neighbour)
    # Another workspace has an agent of the same id, and calls of the same ids.
    foreign_key = _import(db_url, tmp_path, "globex", agents[:2] + [call(f"call_{i}", minute=i) for i in range(3)])

    # No workers in the API process: the reruns wait for the worker process started below.
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env={"RUN_WORKERS": "0"}) as server:
        with_previews: list[dict] = []
        without: list[dict] = []
        live = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(_collect(server, key, "agent_voice1", True, with_previews, live[0])),
                 asyncio.create_task(_collect(server, key, "agent_voice1", False, without, live[1]))]
        try:
            # Once the first event came, nothing committed is missed: the preview (run by the API process) comes next.
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in live)), 15)
            await _post(server, key, PREVIEW, {"id": "call_0"})
            deadline = time.monotonic() + 10
            while not with_previews:
                assert time.monotonic() < deadline, "the subscription with previews never got the preview"
                await asyncio.sleep(0.05)
            jobs = {}
            for who, agent in ((key, "agent_voice1"), (key, "agent_voice2"), (foreign_key, "agent_voice1")):
                started = await _post(server, who, RERUN, {"input": {"agentId": agent}})
                jobs[(who, agent)] = started["rerunAnalysis"]["job"]["id"]
            with ServerProcess(db_url=db_url, data_dir=tmp_path, command="worker").wait_ready():
                deadline = time.monotonic() + 30
                while sum(e["trigger"] == "RERUN" for e in without) < 5:
                    assert time.monotonic() < deadline, without
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)  # the other reruns end meanwhile: nothing of theirs may come
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        reruns = [e for e in without if e["trigger"] == "RERUN"]
        assert [e["trigger"] for e in without] == ["RERUN"] * 5, "no preview without includePreviews, nothing else"
        assert sorted(e["conversationId"] for e in reruns) == [f"call_{i}" for i in range(5)]
        job_id = jobs[(key, "agent_voice1")]
        assert all(e["rerunJobId"] == job_id and e["result"]["trigger"] == "RERUN" for e in reruns)
        assert all(e["result"]["agentVersion"]["version"] == 1 and e["call"]["id"] == e["conversationId"]
                   and e["call"]["callStatus"] == "ENDED" and e["chat"] is None for e in reruns)
        [preview] = [e for e in with_previews if e["trigger"] == "PREVIEW"]
        assert preview["conversationId"] == "call_0" and preview["rerunJobId"] is None
        assert [e for e in with_previews if e["trigger"] == "RERUN"] == reruns, "both subscribers saw the same events"

        # An agent of another workspace, or none, is NOT_FOUND, alike.
        messages = []
        for who, agent in ((foreign_key, "agent_voice2"), (key, "agent_nope")):
            async with _ws(server, who) as session:
                with pytest.raises(TransportQueryError) as caught:
                    async for _ in session.subscribe(GraphQLRequest(SUBSCRIPTION, variable_values={"agent": agent,
                                                                                                   "previews": False})):
                        pass
            assert caught.value.errors[0]["extensions"]["code"] == "NOT_FOUND"
            messages.append(caught.value.errors[0]["message"].replace(agent, "<id>"))
        assert messages[0] == messages[1]
        assert "Traceback" not in server.log()
