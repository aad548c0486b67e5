"""The WebSocket rules, against a running server with a real client, in both protocols: a socket is acknowledged
only with a valid key, and the caps on sockets, operations, the wait for connection_init and message size."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from graphql_api.app import create_app
from graphql_api.db import Database
from graphql_api.testing.processes import ServerProcess, cli
from graphql_api.workspaces import create_api_key
from tests.conftest import test_settings as settings_for

TRANSPORT, LEGACY = "graphql-transport-ws", "graphql-ws"
SAMPLE = Path(__file__).resolve().parent / "samples" / "retell-export.jsonl"
PROGRESS = "subscription($id: ID!) { rerunProgress(jobId: $id) { job { id } } }"


async def new_key(db_url: str, workspace: str) -> str:
    """A key made in process (the CLI's start-up would cost a second or two)."""
    db = Database(db_url, max_size=2)
    await db.connect()
    try:
        return (await create_api_key(db=db, workspace_name=workspace))[1]
    finally:
        await db.disconnect()


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("http", "ws") + "/graphql"


def _init(payload: Any = None) -> str:
    return json.dumps({"type": "connection_init", **({} if payload is None else {"payload": payload})})


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def until_closed(ws: Any, timeout: float = 5) -> tuple[int, str, list[dict]]:
    """What the server sent until it closed the socket, and its close code and reason."""
    messages = []
    try:
        while True:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None, f"no close frame from the server: {closed!r}"
        return closed.rcvd.code, closed.rcvd.reason, messages


async def acked(server: ServerProcess, key: str, protocol: str) -> Any:
    """An acknowledged socket."""
    ws = await websockets.connect(ws_url(server), subprotocols=[protocol])
    await ws.send(_init(_auth(key)))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "connection_ack"}
    return ws


async def still_open(ws: Any, protocol: str) -> bool:
    """The socket answers (graphql-transport-ws: a pong; graphql-ws, which has no ping: an operation's answer)."""
    if protocol == TRANSPORT:
        await ws.send(json.dumps({"type": "ping"}))
        return json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    await ws.send(json.dumps({"type": "start", "id": "alive", "payload": {"query": "{ __typename }"}}))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))["id"] == "alive"


async def test_connection_init_without_a_valid_key_closes_4403_and_is_never_acknowledged(db_url, tmp_path) -> None:
    key = await new_key(db_url, "ws")
    refused = {
        "no payload": None,
        "no key": {},
        "unknown key": _auth("ak_" + "x" * 43),
        "malformed": {"Authorization": f"Basic {key}"},
        "not a string": {"Authorization": 12},
    }
    with ServerProcess(db_url=db_url, data_dir=tmp_path) as server:
        for protocol, (case, payload) in itertools.product((TRANSPORT, LEGACY), refused.items()):
            async with websockets.connect(ws_url(server), subprotocols=[protocol]) as ws:
                started = time.monotonic()
                await ws.send(_init(payload))
                code, reason, messages = await until_closed(ws)
            assert code == 4403 and reason.startswith("Forbidden"), (protocol, case, code, reason)
            assert time.monotonic() - started < 2, (protocol, case)
            assert not [m for m in messages if m["type"] == "connection_ack"], (protocol, case, messages)
            if protocol == TRANSPORT:
                assert messages == [], (case, messages)
            else:
                assert [m["type"] for m in messages] == ["connection_error"], (case, messages)
                assert messages[0]["payload"]["extensions"] == {"code": "UNAUTHENTICATED"}, (case, messages)
        for protocol, kind in ((TRANSPORT, "subscribe"), (LEGACY, "start")):
            # An operation sent without connection_init is refused too (4401), and a valid key is acknowledged.
            async with websockets.connect(ws_url(server), subprotocols=[protocol]) as ws:
                await ws.send(json.dumps({"type": kind, "id": "1", "payload": {"query": "{ __typename }"}}))
                assert (await until_closed(ws))[0] == 4401
            ws = await acked(server, key, protocol)
            assert await still_open(ws, protocol)
            await ws.close()
    assert "Traceback" not in server.log()


async def test_sockets_over_the_per_key_and_per_process_caps_are_refused_4429_naming_the_limit(db_url, tmp_path) -> None:
    key_a, key_b = await new_key(db_url, "a"), await new_key(db_url, "b")
    env = {"WS_MAX_SOCKETS": "3", "WS_MAX_SOCKETS_PER_KEY": "2"}
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env=env) as server:
        a1, a2 = await acked(server, key_a, TRANSPORT), await acked(server, key_a, LEGACY)
        # A third socket with key a: refused after connection_init, never acknowledged.
        async with websockets.connect(ws_url(server), subprotocols=[TRANSPORT]) as ws:
            await ws.send(_init(_auth(key_a)))
            code, reason, messages = await until_closed(ws)
        assert (code, messages) == (4429, []) and "ws_max_sockets_per_key=2" in reason, (code, reason)
        async with websockets.connect(ws_url(server), subprotocols=[LEGACY]) as ws:
            await ws.send(_init(_auth(key_a)))
            code, reason, messages = await until_closed(ws)
        assert code == 4429 and "ws_max_sockets_per_key=2" in reason
        assert [m["payload"]["extensions"] for m in messages] == [
            {"code": "LIMIT_EXCEEDED", "limit": "ws_max_sockets_per_key", "value": 2}]
        # Key b still gets its socket: the third of the process.
        b1 = await acked(server, key_b, TRANSPORT)
        # A fourth socket is closed at once, before its connection_init, whoever it is.
        for protocol in (TRANSPORT, LEGACY):
            async with websockets.connect(ws_url(server), subprotocols=[protocol]) as ws:
                code, reason, messages = await until_closed(ws)
            assert code == 4429 and "ws_max_sockets=3" in reason, (protocol, code, reason)
        assert all([await still_open(a1, TRANSPORT), await still_open(a2, LEGACY), await still_open(b1, TRANSPORT)])
        # A closed socket gives its place back, in the process and to its key.
        await a1.close()
        deadline = time.monotonic() + 5
        while True:
            try:
                a3 = await acked(server, key_a, LEGACY)
                break
            except (AssertionError, websockets.ConnectionClosed):
                assert time.monotonic() < deadline, "the closed socket's place was not given back"
                await asyncio.sleep(0.1)
        for ws in (a2, a3, b1):
            await ws.close()
    assert "Traceback" not in server.log()


async def test_operations_per_socket_are_capped_by_ws_max_subscriptions_with_a_coded_error(db_url, tmp_path) -> None:
    key = await new_key(db_url, "ws")
    assert cli("import", str(SAMPLE), "--workspace", "ws", db_url=db_url, data_dir=tmp_path).returncode == 0
    # No workers: the job stays queued, so its progress subscriptions stay open.
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env={"RUN_WORKERS": "0", "WS_MAX_SUBSCRIPTIONS": "2"}) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            created = await client.post("/graphql", headers=_auth(key), json={
                "query": 'mutation { rerunAnalysis(input: {callIds: ["call_5e0c1a9b7d34"]}) { job { id } } }'})
        job_id = created.json()["data"]["rerunAnalysis"]["job"]["id"]
        for protocol, kind in ((TRANSPORT, "subscribe"), (LEGACY, "start")):
            ws = await acked(server, key, protocol)
            for n in (1, 2, 3):
                await ws.send(json.dumps({"id": str(n), "type": kind, "payload": {"query": PROGRESS, "variables": {"id": job_id}}}))
            refusal = None
            while refusal is None:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert message["id"] != "3" or message["type"] == "error", message
                refusal = message if message["type"] == "error" else None
            errors = refusal["payload"] if isinstance(refusal["payload"], list) else [refusal["payload"]]
            assert refusal["id"] == "3" and [e["extensions"] for e in errors] == [
                {"code": "LIMIT_EXCEEDED", "limit": "ws_max_subscriptions", "value": 2}], refusal
            await ws.close()
    assert "Traceback" not in server.log()


async def test_a_socket_without_connection_init_is_closed_4408_after_ws_init_timeout_s(db_url, tmp_path) -> None:
    key = await new_key(db_url, "ws")
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env={"WS_INIT_TIMEOUT_S": "0.5"}) as server:
        for protocol in (TRANSPORT, LEGACY):
            async with websockets.connect(ws_url(server), subprotocols=[protocol]) as ws:
                started = time.monotonic()
                code, reason, messages = await until_closed(ws)
            assert (code, messages) == (4408, []) and "timeout" in reason, (protocol, code, reason)
            assert 0.4 < time.monotonic() - started < 3, protocol
            # A socket that sends its connection_init in time stays open past the timeout.
            ws = await acked(server, key, protocol)
            await asyncio.sleep(0.8)
            assert await still_open(ws, protocol)
            await ws.close()


async def test_a_message_over_max_ws_message_bytes_closes_the_socket_1009(db_url, tmp_path) -> None:
    key = await new_key(db_url, "ws")
    limit = 4096

    def operation(protocol: str, size: int) -> str:
        kind = "subscribe" if protocol == TRANSPORT else "start"
        message = json.dumps({"id": "1", "type": kind, "payload": {"query": "{ __typename }", "variables": {"pad": ""}}})
        return message.replace('"pad": ""', '"pad": "' + "x" * (size - len(message)) + '"')

    with ServerProcess(db_url=db_url, data_dir=tmp_path, env={"MAX_WS_MESSAGE_BYTES": str(limit)}) as server:
        for protocol, size in itertools.product((TRANSPORT, LEGACY), (limit + 1, 10 << 20)):
            ws = await acked(server, key, protocol)
            await ws.send(operation(protocol, limit))  # at the limit: answered (graphql-ws answers queries with an error)
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer["id"] == "1" and (protocol == LEGACY or answer["payload"]["data"] == {"__typename": "Query"})
            if protocol == TRANSPORT:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"id": "1", "type": "complete"}
            with pytest.raises(websockets.ConnectionClosed):
                await ws.send(operation(protocol, size))
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1009, (protocol, size, ws.close_code, ws.close_reason)
        # The server goes on serving.
        ws = await acked(server, key, TRANSPORT)
        assert await still_open(ws, TRANSPORT)
        await ws.close()
    assert "Traceback" not in server.log()


async def test_the_handler_enforces_the_message_size_and_counts_sockets_on_any_asgi_server(db_url, tmp_path) -> None:
    """In process (no uvicorn and its ws_max_size): the handler's own check closes 1009 naming the limit."""
    key = await new_key(db_url, "ws")
    app = create_app(settings_for(db_url, max_ws_message_bytes=2048, ws_max_sockets=5), db_url)

    def sockets() -> dict[str, float | None]:
        registry = app.state.metrics.registry
        return {name: registry.get_sample_value(name) for name in
                ("graphql_ws_sockets_open", "graphql_ws_sockets_authenticated", "graphql_ws_api_keys_connected")}

    def run() -> tuple[dict[str, float | None], dict[str, float | None], int, str]:
        with TestClient(app) as client:
            with client.websocket_connect("/graphql", subprotocols=[TRANSPORT]) as ws:
                ws.send_text(_init(_auth(key)))
                assert ws.receive_json()["type"] == "connection_ack"
                during = sockets()
                ws.send_text(json.dumps({"type": "ping", "payload": {"pad": "x" * 4096}}))
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
            time.sleep(0.2)
            return during, sockets(), closed.value.code, closed.value.reason

    during, after, code, reason = await asyncio.to_thread(run)
    assert (code, reason) == (1009, "Message too big: max_ws_message_bytes=2048")
    assert during == {"graphql_ws_sockets_open": 1, "graphql_ws_sockets_authenticated": 1, "graphql_ws_api_keys_connected": 1}
    assert after["graphql_ws_sockets_open"] == 0 and after["graphql_ws_sockets_authenticated"] == 0
