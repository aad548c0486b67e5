"""A PostgreSQL restart in the middle of a rerun: the job finishes after it, nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from graphql_api.db import EmbeddedPostgres, with_database
from graphql_api.testing.processes import ServerProcess, cli
from tests.factories import call, voice_agent

SUBSCRIPTION = """subscription($id: ID!) { rerunProgress(jobId: $id) {
  job { status succeeded failed total } item { conversationId status } } }"""


@pytest.fixture
def own_postgres():
    """A PostgreSQL of this test's own, since the test restarts it."""
    directory = Path(tempfile.mkdtemp(prefix="gqlapi-restart-pg-"))
    embedded = EmbeddedPostgres(directory, delete_on_stop=True)
    url = embedded.start()
    yield directory, url
    embedded.stop()


def _restart(directory: Path) -> None:
    from pgserver._commands import pg_ctl

    # pgserver runs the server as its own user when we are root; pg_ctl refuses to run as root.
    user = {"user": "pgserver"} if os.geteuid() == 0 else {}
    pg_ctl(["-m", "fast", "-w", "restart"], pgdata=directory, timeout=60, **user)


async def _job(client: httpx.AsyncClient, job_id: str) -> dict | None:
    try:
        response = await client.post("/graphql", json={"query": "query($id: ID!) { rerunJob(id: $id) { status total succeeded failed } }", "variables": {"id": job_id}})
        body = response.json()
    except httpx.HTTPError:
        return None
    return None if body.get("errors") else body["data"]["rerunJob"]


async def test_a_rerun_finishes_after_a_database_restart(own_postgres, tmp_path, gemini) -> None:
    directory, server_url = own_postgres
    url = with_database(server_url, "postgres")
    key = cli("create-api-key", "--workspace", "acme", db_url=url, data_dir=tmp_path).stdout.strip().splitlines()[-1]
    export = tmp_path / "export.jsonl"
    export.write_text("\n".join(json.dumps(r) for r in [voice_agent(version=0), voice_agent(version=1, published=False)]
                                + [call(f"call_{i:02d}", minute=i) for i in range(12)]))
    assert cli("import", str(export), "--workspace", "acme", db_url=url, data_dir=tmp_path).returncode == 0

    gemini.delay_s = 0.4
    env = {"GEMINI_API_KEY": "k", "GEMINI_BASE_URL": gemini.base_url, "ANALYSIS_CONCURRENCY": "2"}
    with ServerProcess(db_url=url, data_dir=tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            created = (await client.post("/graphql", json={"query": 'mutation { rerunAnalysis(input: {agentId: "agent_voice1"}) { job { id total } } }'})).json()
            job_id = created["data"]["rerunAnalysis"]["job"]["id"]

            transport = WebsocketsTransport(url=server.base_url.replace("http", "ws") + "/graphql",
                                            init_payload={"Authorization": f"Bearer {key}"})
            events: list[dict] = []

            async def watch() -> None:
                async with Client(transport=transport, fetch_schema_from_transport=False) as session:
                    async for event in session.subscribe(GraphQLRequest(SUBSCRIPTION, variable_values={"id": job_id})):
                        events.append(event["rerunProgress"])

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(1.0)  # a few items are done, two are in flight
            await asyncio.to_thread(_restart, directory)

            deadline = time.monotonic() + 90
            job = None
            while time.monotonic() < deadline:
                job = await _job(client, job_id)
                if job and job["status"] in ("SUCCEEDED", "PARTIALLY_FAILED", "FAILED"):
                    break
                await asyncio.sleep(0.2)
            await asyncio.wait_for(watcher, timeout=30)
        log = server.log()

    assert job == {"status": "SUCCEEDED", "total": 12, "succeeded": 12, "failed": 0}, log[-3000:]
    conn = await asyncpg.connect(dsn=url)
    try:
        per_conversation = await conn.fetch(
            "SELECT conversation_id, count(*) AS n FROM analysis_results WHERE rerun_job_id = $1 GROUP BY 1", job_id
        )
        charges = await conn.fetchval(
            "SELECT count(*) FROM charges c JOIN analysis_results r ON r.id = c.analysis_result_id WHERE r.rerun_job_id = $1", job_id
        )
    finally:
        await conn.close()
    assert len(per_conversation) == 12 and {r["n"] for r in per_conversation} == {1} and charges == 12
    # The progress stream went on across the restart and ended with the job.
    assert events[-1]["job"]["status"] == "SUCCEEDED"
    item_ids = [e["item"]["conversationId"] for e in events[1:] if e["item"]]
    assert len(item_ids) == len(set(item_ids)) == 12 - (events[0]["job"]["succeeded"] + events[0]["job"]["failed"])
    assert log.count("progress_listener_connected") >= 2  # the listener reconnected
