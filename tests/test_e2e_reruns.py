"""End to end: real server and worker processes, a real WebSocket GraphQL client, crashes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from tests.factories import call, voice_agent
from graphql_api.testing.processes import ServerProcess, cli

SUBSCRIPTION = """subscription($id: ID!) { rerunProgress(jobId: $id) {
  job { id status total succeeded failed pending }
  item { conversationId status result { trigger summary agentVersion { version } } }
} }"""
FINAL = {"SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED"}


def _setup(db_url: str, tmp_path: Path, calls: int) -> str:
    created = cli("create-api-key", "--workspace", "e2e", db_url=db_url, data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    path = tmp_path / "export.jsonl"
    records = [voice_agent(version=0), voice_agent(version=1, published=False)]
    records += [call(f"call_{i:03d}", minute=i) for i in range(calls)]
    path.write_text("\n".join(json.dumps(r) for r in records))
    imported = cli("import", str(path), "--workspace", "e2e", db_url=db_url, data_dir=tmp_path)
    assert imported.returncode == 0, imported.stderr
    return created.stdout.strip().splitlines()[-1]


def _gemini_env(gemini, **extra: str) -> dict[str, str]:
    return {"GEMINI_API_KEY": "test-key", "GEMINI_BASE_URL": gemini.base_url, "GEMINI_RETRY_BASE_DELAY_S": "0.05", **extra}


async def _post(server: ServerProcess, key: str, query: str, variables: dict | None = None) -> dict:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        response = await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers={"Authorization": f"Bearer {key}"})
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


async def _start_job(server: ServerProcess, key: str, **input) -> dict:
    query = "mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id total } } }"
    return (await _post(server, key, query, {"input": input}))["rerunAnalysis"]["job"]


async def _wait_final(server: ServerProcess, key: str, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = (await _post(server, key, "query($id: ID!) { rerunJob(id: $id) { status total succeeded failed canceled } }", {"id": job_id}))["rerunJob"]
        if job["status"] in FINAL:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError("job did not finish")


def _ws_client(server: ServerProcess, key: str, subprotocol: str) -> Client:
    transport = WebsocketsTransport(
        url=server.base_url.replace("http", "ws") + "/graphql",
        init_payload={"Authorization": f"Bearer {key}"},
        subprotocols=[subprotocol],
    )
    return Client(transport=transport, fetch_schema_from_transport=False)


async def _results_per_conversation(db_url: str, job_id: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        rows = await conn.fetch(
            "SELECT r.conversation_id, count(*) AS n, count(c.id) AS charges FROM analysis_results r "
            "LEFT JOIN charges c ON c.analysis_result_id = r.id WHERE r.rerun_job_id = $1 GROUP BY 1",
            job_id,
        )
    finally:
        await conn.close()
    assert all(r["n"] == r["charges"] for r in rows)
    return {r["conversation_id"]: r["n"] for r in rows}


@pytest.mark.parametrize("subprotocol", [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL])
async def test_subscriber_on_one_process_sees_a_job_run_by_a_worker_process(db_url, tmp_path, gemini, subprotocol) -> None:
    key = _setup(db_url, tmp_path, calls=6)
    gemini.delay_s = 0.3
    # The API process runs no workers: a separate worker process does the job.
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env=_gemini_env(gemini, RUN_WORKERS="0")) as server, \
         ServerProcess(db_url=db_url, data_dir=tmp_path, env=_gemini_env(gemini, ANALYSIS_CONCURRENCY="2"), command="worker") as _worker:
        job = await _start_job(server, key, agentId="agent_voice1")
        events = []
        async with _ws_client(server, key, subprotocol) as session:
            async for event in session.subscribe(GraphQLRequest(SUBSCRIPTION, variable_values={"id": job["id"]})):
                events.append(event["rerunProgress"])

        snapshot, items = events[0], events[1:]
        assert snapshot["item"] is None and snapshot["job"]["id"] == job["id"]
        already_done = snapshot["job"]["succeeded"] + snapshot["job"]["failed"]
        assert already_done < 6, "the job finished before the subscription started; slow the Gemini server down"
        assert len(items) == 6 - already_done
        assert len({e["item"]["conversationId"] for e in items}) == len(items)
        assert all(e["item"]["status"] == "SUCCEEDED" and e["item"]["result"]["trigger"] == "RERUN" for e in items)
        assert all(e["item"]["result"]["agentVersion"]["version"] == 1 for e in items)
        done = [e["job"]["succeeded"] for e in items]
        assert done == sorted(done) and done[-1] == 6
        assert items[-1]["job"]["status"] == "SUCCEEDED" and items[-1]["job"]["pending"] == 0

        # A finished job: the snapshot, then the stream completes.
        async with _ws_client(server, key, subprotocol) as session:
            late = [e async for e in session.subscribe(GraphQLRequest(SUBSCRIPTION, variable_values={"id": job["id"]}))]
        assert len(late) == 1 and late[0]["rerunProgress"]["job"]["status"] == "SUCCEEDED"

        # Another workspace's job, or an unknown one, is NOT_FOUND (a bad key never gets a socket: see
        # tests/test_websocket_limits.py).
        other = cli("create-api-key", "--workspace", "other", db_url=db_url, data_dir=tmp_path).stdout.strip().splitlines()[-1]
        for who, job_id, code in ((other, job["id"], "NOT_FOUND"), (key, "rerun_00000000000000000000", "NOT_FOUND")):
            async with _ws_client(server, who, subprotocol) as session:
                with pytest.raises(TransportQueryError) as caught:
                    async for _ in session.subscribe(GraphQLRequest(SUBSCRIPTION, variable_values={"id": job_id})):
                        pass
            assert caught.value.errors[0]["extensions"]["code"] == code


def _processed(log: str) -> int:
    match = re.search(r"rerun_worker_stopped owner=\S+ processed=(\d+)", log)
    assert match, log[-2000:]
    return int(match.group(1))


async def test_two_worker_processes_share_one_job_without_duplicates(db_url, tmp_path, gemini) -> None:
    key = _setup(db_url, tmp_path, calls=40)
    gemini.delay_s = 0.05
    env = _gemini_env(gemini, ANALYSIS_CONCURRENCY="3")
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env=_gemini_env(gemini, RUN_WORKERS="0")) as server:
        # Both are listening before the job appears.
        workers = [ServerProcess(db_url=db_url, data_dir=tmp_path, env=env, command="worker").wait_ready() for _ in range(2)]
        job = await _start_job(server, key, agentId="agent_voice1")
        final = await _wait_final(server, key, job["id"])
        for worker in workers:
            worker.stop()
    assert final["status"] == "SUCCEEDED" and final["succeeded"] == 40
    per_conversation = await _results_per_conversation(db_url, job["id"])
    assert len(per_conversation) == 40 and set(per_conversation.values()) == {1}
    shares = [_processed(w.log()) for w in workers]
    assert sum(shares) == 40 and all(share > 0 for share in shares), shares
    assert len(gemini.requests) == 40


async def test_a_worker_killed_mid_job_loses_nothing_and_does_nothing_twice(db_url, tmp_path, gemini) -> None:
    key = _setup(db_url, tmp_path, calls=12)
    gemini.delay_s = 0.6
    env = _gemini_env(gemini, ANALYSIS_CONCURRENCY="4", RERUN_LEASE_SECONDS="2")
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env=_gemini_env(gemini, RUN_WORKERS="0")) as server:
        doomed = ServerProcess(db_url=db_url, data_dir=tmp_path, env=env, command="worker").wait_ready()
        job = await _start_job(server, key, agentId="agent_voice1")
        await asyncio.sleep(1.0)  # some items done, four in flight
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
        survivor = ServerProcess(db_url=db_url, data_dir=tmp_path, env=env, command="worker").wait_ready()
        final = await _wait_final(server, key, job["id"])
        survivor.stop()
    assert final["status"] == "SUCCEEDED" and final["succeeded"] == 12
    per_conversation = await _results_per_conversation(db_url, job["id"])
    assert len(per_conversation) == 12 and set(per_conversation.values()) == {1}
    assert "rerun_worker_started" in survivor.log()
    # The killed worker's in-flight items were asked of the model twice, but stored and charged once.
    assert len(gemini.requests) > 12


async def _raw_subscriber(url: str, key: str, protocol: str, job_id: str, frames: list[str], ready: asyncio.Event) -> None:
    import websockets

    legacy = protocol == WebsocketsTransport.APOLLO_SUBPROTOCOL
    async with websockets.connect(url, subprotocols=[protocol]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
        while json.loads(await ws.recv())["type"] != "connection_ack":
            pass
        payload = {"query": SUBSCRIPTION, "variables": {"id": job_id}}
        await ws.send(json.dumps({"id": "1", "type": "start" if legacy else "subscribe", "payload": payload}))
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "ka":
                continue
            if message["type"] == "complete":
                return
            if message["payload"]["data"]["rerunProgress"]["item"] is None:
                ready.set()  # the snapshot: each subscriber's own
                continue
            frames.append(raw)


async def test_subscribers_of_one_document_get_the_same_bytes_of_each_event(db_url, tmp_path, gemini) -> None:
    key = _setup(db_url, tmp_path, calls=4)
    gemini.delay_s = 0.3
    protocols = [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL] * 2 + [WebsocketsTransport.APOLLO_SUBPROTOCOL] * 2
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env=_gemini_env(gemini, RUN_WORKERS="0")) as server:
        job = await _start_job(server, key, agentId="agent_voice1")
        url = server.base_url.replace("http", "ws") + "/graphql"
        frames: list[list[str]] = [[] for _ in protocols]
        ready = [asyncio.Event() for _ in protocols]
        tasks = [asyncio.create_task(_raw_subscriber(url, key, p, job["id"], f, r)) for p, f, r in zip(protocols, frames, ready)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 30)
        with ServerProcess(db_url=db_url, data_dir=tmp_path, env=_gemini_env(gemini, ANALYSIS_CONCURRENCY="2"), command="worker"):
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        log = server.log()
    assert "Traceback" not in log
    assert [len(f) for f in frames] == [4] * 4
    # One execution per event: the same bytes on both sockets of a protocol, the same payload on all four, in
    # the messages the protocols define (orjson re-encodes each to the same bytes: same keys, same order).
    assert frames[0] == frames[1] and frames[2] == frames[3]
    for transport, legacy in zip(frames[0], frames[2]):
        payload = json.loads(transport)["payload"]
        assert list(json.loads(transport)) == ["id", "type", "payload"] and json.loads(transport)["type"] == "next"
        assert list(json.loads(legacy)) == ["type", "id", "payload"] and json.loads(legacy)["type"] == "data"
        assert json.loads(legacy)["payload"] == payload and list(payload) == ["data"]
        assert transport == json.dumps(json.loads(transport), separators=(",", ":"), ensure_ascii=False)
    items = [json.loads(f)["payload"]["data"]["rerunProgress"] for f in frames[0]]
    assert [i["job"]["succeeded"] for i in items] == [1, 2, 3, 4]
    assert all(i["item"]["result"]["trigger"] == "RERUN" for i in items)
