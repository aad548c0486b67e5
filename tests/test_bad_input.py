"""Careless and hostile requests: each gets a GraphQL response with a coded error, the status code the
GraphQL-over-HTTP specification gives it, and changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets

from graphql_api.testing.processes import ServerProcess
from tests.conftest import data, error_codes
from tests.factories import call, load, voice_agent

GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture
async def key(api):
    key = await api.key_for("acme")
    await load(api, "acme", [voice_agent(), voice_agent(version=1, published=False), call("call_0")])
    return key


async def _digest(db_url: str) -> dict[str, str]:
    """One md5 per table of everything in it: equal digests, unchanged data."""
    conn = await asyncpg.connect(dsn=db_url)
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {t: await conn.fetchval(f'SELECT md5(coalesce(string_agg(x::text, \'|\' ORDER BY x::text), \'\')) FROM "{t}" x') for t in tables}
    finally:
        await conn.close()


def _coded(response, status: int, code: str = "BAD_USER_INPUT") -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == [code], body
    return body


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"null", "JSON NoneType"),
        (b"true", "JSON bool"),
        (b"42", "JSON int"),
        (b'"{ agents { nodes { id } } }"', "JSON str"),
        (b"[]", "Batched"),
        (b'[{"query": "{ __typename }"}]', "Batched"),
        (b"{", "not valid UTF-8 JSON"),
        (b'{"query": "{ __typename }"', "not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid UTF-8 JSON"),
        (b'{"query": "{ __typename }", "variables": "x"}', "`variables` must be a JSON object"),
        (b'{"query": 7}', "no GraphQL document"),
        (b'{"variables": {}}', "no GraphQL document"),
        (b'{"query": "{ __typename }", "operationName": 3}', "operationName"),
        (b'{"query": "{ x(s: \\"\\ud800\\") }"}', "not valid UTF-8 JSON"),  # a lone surrogate is not Unicode
    ],
)
async def test_bodies_that_are_not_graphql_requests_get_a_coded_400(api, key, body: bytes, fragment: str) -> None:
    for accept in (None, GRAPHQL_RESPONSE):
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}", **({"Accept": accept} if accept else {})}
        response = await api.client.post("/graphql", content=body, headers=headers)
        answer = _coded(response, 400)
        assert fragment in answer["errors"][0]["message"]
        assert "data" not in answer
        assert response.headers["content-type"] == (accept or "application/json")


async def test_a_wrong_media_type_method_or_accept_header_is_answered_in_graphql(api, key) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    form = await api.client.post("/graphql", content=b"query={__typename}", headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    _coded(form, 415)
    plain = await api.client.post("/graphql", content=b"{ __typename }", headers={**auth, "Content-Type": "text/plain"})
    _coded(plain, 415)
    for method in ("PUT", "PATCH", "DELETE"):
        response = await api.client.request(method, "/graphql", json={"query": "{ __typename }"}, headers=auth)
        _coded(response, 405)
        assert response.headers["allow"] == "GET, POST"
    mutation_by_get = await api.client.get("/graphql", params={"query": 'mutation { publishDraft(agentId: "agent_voice1") { version } }'}, headers=auth)
    _coded(mutation_by_get, 405)
    assert mutation_by_get.headers["allow"] == "POST"
    refused = await api.client.post("/graphql", json={"query": "{ __typename }"}, headers={**auth, "Accept": "text/csv"})
    _coded(refused, 406)


async def test_accept_chooses_the_media_type_and_the_status_follows_the_spec(api, key) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    both = f"{GRAPHQL_RESPONSE}, application/json;q=0.9"
    ok = await api.client.post("/graphql", json={"query": "{ agents { nodes { id } } }"}, headers={**auth, "Accept": both})
    assert ok.status_code == 200 and ok.headers["content-type"] == GRAPHQL_RESPONSE and ok.json()["data"]["agents"]
    assert (await api.client.post("/graphql", json={"query": "{ __typename }"}, headers={**auth, "Accept": "*/*"})).headers["content-type"] == "application/json"

    # A request that can't start: 400 and no `data` with the GraphQL media type, 200 with JSON.
    invalid = {"query": "{ agents { nodes { nope } } }"}
    strict = await api.client.post("/graphql", json=invalid, headers={**auth, "Accept": GRAPHQL_RESPONSE})
    assert "data" not in _coded(strict, 400)
    assert "data" not in _coded(await api.client.post("/graphql", json=invalid, headers=auth), 200)
    # Execution started: 200 with `data`, even null.
    missing = await api.client.post("/graphql", json={"query": '{ agent(id: "agent_nope") { id } }'}, headers={**auth, "Accept": GRAPHQL_RESPONSE})
    assert _coded(missing, 200, "NOT_FOUND")["data"] == {"agent": None}


async def test_operation_choice_is_never_guessed(api, key, db_url) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    before = await _digest(db_url)
    two = 'mutation Publish { publishDraft(agentId: "agent_voice1") { version } } query Agents { agents { nodes { id } } }'
    several = _coded(await api.client.post("/graphql", json={"query": two}, headers=auth), 200)
    assert "operationName" in several["errors"][0]["message"] and "data" not in several
    stale = _coded(await api.client.post("/graphql", json={"query": two, "operationName": "Gone"}, headers=auth), 200)
    assert "Gone" in stale["errors"][0]["message"]
    chosen = await api.client.post("/graphql", json={"query": two, "operationName": "Agents"}, headers=auth)
    assert data(chosen.json())["agents"]["nodes"]
    subscription = {"query": 'subscription { rerunProgress(jobId: "rerun_00000000000000000001") { job { id } } }'}
    over_http = _coded(await api.client.post("/graphql", json=subscription, headers={**auth, "Accept": GRAPHQL_RESPONSE}), 400)
    assert "WebSocket" in over_http["errors"][0]["message"]
    assert await _digest(db_url) == before


BAD_STRINGS = ["nul \x00 inside", "\x00"]


@pytest.mark.parametrize("bad", BAD_STRINGS)
async def test_strings_postgresql_cannot_store_are_the_clients_mistake(api, key, db_url, bad: str, caplog) -> None:
    before = await _digest(db_url)
    cases = [
        ("mutation($a: ID!, $i: AnalysisConfigInput!) { updateDraftPrompts(agentId: $a, input: $i) { version } }",
         {"a": "agent_voice1", "i": {"summaryPrompt": bad}}),
        ("mutation($a: ID!, $i: AnalysisConfigInput!) { updateDraftPrompts(agentId: $a, input: $i) { version } }",
         {"a": "agent_voice1", "i": {"dataFields": [{"name": "x", "type": "ENUM", "choices": ["a", bad]}]}}),
        ("query($id: ID!) { call(id: $id) { id } }", {"id": bad}),
        ("mutation($i: RerunAnalysisInput!) { rerunAnalysis(input: $i) { job { id } } }",
         {"i": {"callIds": ["call_0"], "idempotencyKey": bad}}),
        ("query($a: String) { calls(after: $a) { nodes { id } } }", {"a": bad}),
    ]
    for query, variables in cases:
        result = await api.gql(query, variables, key=key)
        assert error_codes(result) == ["BAD_USER_INPUT"], (variables, result)
        assert "NUL" in result["errors"][0]["message"]
    literal = await api.gql('{ call(id: "call\\u0000") { id } }', key=key)
    assert error_codes(literal) == ["BAD_USER_INPUT"]
    assert await _digest(db_url) == before
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "not a date", "2025-13-45T00:00:00Z", 12],
)
async def test_instants_outside_the_range_or_malformed_are_bad_input(api, key, value, caplog) -> None:
    result = await api.gql("query($f: DateTime) { calls(filter: {startedAfter: $f}) { nodes { id } } }", {"f": value}, key=key)
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    expected = "supported range" if isinstance(value, str) and value[:4] in ("0001", "9999") else "DateTime"
    assert expected in result["errors"][0]["message"] or "ISO 8601" in result["errors"][0]["message"], result
    edit = await api.gql(
        "mutation($t: DateTime) { updateDraftPrompts(agentId: \"agent_voice1\", input: {summaryPrompt: \"x\", expectedConfigUpdatedAt: $t}) { version } }",
        {"t": value}, key=key)
    assert error_codes(edit) == ["BAD_USER_INPUT"], edit
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]


async def test_forged_cursors_are_bad_input(api, key, caplog) -> None:
    import base64

    def forge(payload: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")

    job_id = data(await api.gql("mutation { rerunAnalysis(input: {callIds: [\"call_0\"], dryRun: false}) { job { id } } }", key=key))["rerunAnalysis"]["job"]["id"]
    for cursor in (forge(["item", 2**31]), forge(["item", 2**63]), forge(["item", True]), forge(["item", -1]), "%%%", forge("x")):
        result = await api.gql("query($id: ID!, $a: String) { rerunJob(id: $id) { items(after: $a) { nodes { seq } } } }", {"id": job_id, "a": cursor}, key=key)
        assert error_codes(result) == ["BAD_USER_INPUT"], (cursor, result)
    for cursor in (forge(["call", "0001-01-01T00:00:00+14:00", "call_0"]), forge(["call", "9999-12-31T23:59:59-14:00", "x"]),
                   forge(["call", "2025-01-01T00:00:00+00:00", "a\x00b"]), forge(["call", "yesterday", "x"])):
        result = await api.gql("query($a: String) { calls(after: $a) { nodes { id } } }", {"a": cursor}, key=key)
        assert error_codes(result) == ["BAD_USER_INPUT"], (cursor, result)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]


@pytest.mark.parametrize("value", ["-0", " 1 ", "1_000", "1e3", "-1", "NaN", "Infinity", "0x10", "", "1.", ".5", True, -1, 1.5e300, {"x": 1}])
async def test_decimal_input_is_strict(api, key, value) -> None:
    result = await api.gql(
        "mutation($c: Decimal) { rerunAnalysis(input: {callIds: [\"call_0\"], dryRun: true, maxCostUsd: $c}) { estimate { costUsd } } }",
        {"c": value}, key=key)
    assert error_codes(result) == ["BAD_USER_INPUT"], (value, result)


@pytest.mark.parametrize("value", ["0", "12.50", "0.000001", 3, 2.5])
async def test_plain_decimals_are_accepted(api, key, value) -> None:
    result = await api.gql(
        "mutation($c: Decimal) { rerunAnalysis(input: {callIds: [\"call_0\"], dryRun: true, maxCostUsd: $c}) { estimate { costUsd } } }",
        {"c": value}, key=key)
    assert not result.get("errors") or error_codes(result) == ["LIMIT_EXCEEDED"], result


async def test_websocket_errors_carry_codes_lone_surrogates_included(db_url: str, tmp_path: Path) -> None:
    from graphql_api.testing.processes import cli

    key = cli("create-api-key", "--workspace", "ws", db_url=db_url, data_dir=tmp_path).stdout.strip().splitlines()[-1]
    sample = Path(__file__).resolve().parent / "samples" / "retell-export.jsonl"
    assert cli("import", str(sample), "--workspace", "ws", db_url=db_url, data_dir=tmp_path).returncode == 0
    # No workers: the job stays queued, so its progress subscriptions stay open.
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env={"RUN_WORKERS": "0"}) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            created = await client.post("/graphql", headers={"Authorization": f"Bearer {key}"}, json={
                "query": 'mutation { rerunAnalysis(input: {callIds: ["call_5e0c1a9b7d34"]}) { job { id } } }'})
            job_id = created.json()["data"]["rerunAnalysis"]["job"]["id"]
        url = server.base_url.replace("http", "ws") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            # json.dumps writes the lone surrogate as the escape \ud800, which Python's JSON reader accepts.
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": "query($id: ID!) { call(id: $id) { id } }", "variables": {"id": "\ud800"}}}))
            message = json.loads(await ws.recv())
            assert message["type"] == "error" or message["payload"].get("errors"), message
            errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], message
            # The 101st operation on one socket is refused with the limit's name and value.
            subscription = "subscription($id: ID!) { rerunProgress(jobId: $id) { job { id } } }"
            for n in range(2, 104):
                await ws.send(json.dumps({"id": str(n), "type": "subscribe", "payload": {
                    "query": subscription, "variables": {"id": job_id}}}))
            refusals = []
            while len(refusals) < 2:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                if message["type"] == "error" and message["id"] in ("102", "103"):
                    refusals.append(message)
            assert {e["extensions"]["code"] for m in refusals for e in m["payload"]} == {"LIMIT_EXCEEDED"}
            assert refusals[0]["payload"][0]["extensions"]["value"] == 100
        log = server.log_path.read_text()
    assert "Traceback" not in log


async def test_an_error_that_nulls_a_list_item_leaves_the_other_items_answers_whole(api, key) -> None:
    """graphql-core cancels the pending siblings of a failed list item; a loader's shared answer must survive."""
    await load(api, "acme", [call(f"call_{i}", minute=i) for i in range(1, 6)])
    query = ("{ calls { nodes { agent { calls(first: 101) { nodes { id } } draft { id } } } "
             "edges { node { agent { draft { id } } } } } }")
    for _ in range(5):
        response = await api.client.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text[:300]
        assert set(error_codes(response.json())) == {"BAD_USER_INPUT"}, response.text[:300]
