"""Limits before execution: each refusal is LIMIT_EXCEEDED naming the limit and its value, and comes
before any resolver or SQL statement runs. Then the production posture: introspection, GraphiQL,
/metrics, CORS and security headers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import asyncpg
import httpx
import pytest

from graphql_api.testing.processes import ServerProcess, cli
from tests.conftest import data, error_codes, running_api
from tests.factories import call, load, voice_agent

GRAPHQL_RESPONSE = "application/graphql-response+json"


async def _post(api, key: str, body: dict, **headers: str) -> httpx.Response:
    return await api.client.post("/graphql", json=body, headers={"Authorization": f"Bearer {key}", **headers})


def _refused(response: httpx.Response, limit: str, status: int = 200) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert error_codes(body) == ["LIMIT_EXCEEDED"], body
    assert body["errors"][0]["extensions"]["limit"] == limit
    assert "value" in body["errors"][0]["extensions"]
    return body


@pytest.fixture
async def key(api):
    key = await api.key_for("acme")
    await load(api, "acme", [voice_agent(), call("call_0")])
    return key


def _nested(rounds: int) -> str:
    """call -> (agent -> calls -> nodes) x rounds -> id: 3 x rounds + 2 levels deep."""
    inner = "id"
    for _ in range(rounds):
        inner = f"agent {{ calls(first: 1) {{ nodes {{ {inner} }} }} }}"
    return f'{{ call(id: "call_0") {{ {inner} }} }}'


@pytest.mark.parametrize(
    "query, limit",
    [
        ("{ " + "__typename " * 60_000 + "}", "max_document_bytes"),
        ("{ " + "a " * 20_000 + "}", "max_tokens"),
        ("{ __typename }" + " " * 200_000, "max_document_bytes"),
        (" ".join(f"query Q{i} {{ __typename }}" for i in range(60)), "max_operations"),
        (_nested(10), "max_depth"),  # 32 levels
        ("{ " + " ".join(f"a{i}: __typename" for i in range(101)) + " }", "max_aliases"),
        ("{ " + " ".join(f"p{i}: calls(first: 100) {{ nodes {{ id agent {{ id }} analysis {{ summary }} }} }}" for i in range(60)) + " }", "max_cost"),
        ("{ calls(first: 100) { nodes { analysisHistory { agentVersion { configChanges { before { dataFields { name } } } } } } } }", "max_cost"),
        ("query($n: Int) { " + " ".join(f"p{i}: calls(first: $n) {{ nodes {{ id agent {{ id }} }} }}" for i in range(80)) + " }", "max_cost"),
        ("{ " + " ".join(f"i{i}: __schema {{ queryType {{ name }} }}" for i in range(25)) + " }", "max_cost"),
    ],
)
async def test_expensive_documents_are_refused_before_anything_runs(api, key, query: str, limit: str) -> None:
    await _post(api, key, {"query": "{ __typename }"})  # the key is looked up once, then cached
    statements = api.db.statements_executed
    body = {"query": query, "variables": {"n": 100}}
    refused = _refused(await _post(api, key, body, Accept=GRAPHQL_RESPONSE), limit, status=400)
    assert "data" not in refused
    assert api.db.statements_executed == statements  # not one SQL statement (the key was cached)


async def test_documents_within_the_limits_run(api, key) -> None:
    page = "{ calls(first: 100) { nodes { id agent { id name } agentVersion { version } analysis { summary } analysisHistory { id } } } }"
    assert data((await _post(api, key, {"query": page})).json())["calls"]["nodes"]
    assert data((await _post(api, key, {"query": _nested(4)})).json())["call"]["agent"]  # 14 levels
    introspection = "{ __schema { types { name fields { name type { name ofType { name ofType { name ofType { name } } } } } } } }"
    assert data((await _post(api, key, {"query": introspection})).json())["__schema"]["types"]


async def test_a_body_over_the_limit_is_413_before_it_is_read(api, key) -> None:
    big = {"query": "{ __typename }", "variables": {"pad": "x" * (2 << 20)}}
    _refused(await _post(api, key, big), "max_body_bytes", status=413)


async def test_each_limit_is_a_setting(db_url) -> None:
    async with running_api(db_url, max_depth=3, max_aliases=1, max_body_bytes=2048) as api:
        key = await api.key_for("acme")
        _refused(await _post(api, key, {"query": "{ agents { nodes { versions { version } } } }"}), "max_depth")
        assert _refused(await _post(api, key, {"query": "{ a: __typename b: __typename }"}), "max_aliases")["errors"][0]["extensions"]["value"] == 1
        _refused(await _post(api, key, {"query": "{ __typename }", "variables": {"x": "y" * 3000}}), "max_body_bytes", status=413)


async def test_the_parse_cache_is_bounded_in_bytes_and_skips_large_documents(db_url) -> None:
    async with running_api(db_url, document_cache_bytes=200_000, cacheable_document_bytes=2_000) as api:
        key = await api.key_for("acme")
        for i in range(100):  # distinct small documents: the cache stays within its byte budget
            await _post(api, key, {"query": f"query Q{i} {{ agents {{ nodes {{ id }} }} }}"})
        documents = api.services.documents
        assert 0 < documents.size_bytes <= 200_000 and len(documents) < 100
        before = len(documents)
        large = "{ " + " ".join(f"a{i}: __typename" for i in range(90)) + " }" + " " * 3_000
        assert data((await _post(api, key, {"query": large})).json())
        assert len(documents) <= before  # over cacheable_document_bytes: parsed, never kept


async def test_a_rate_limit_per_key(db_url) -> None:
    async with running_api(db_url, rate_limit_per_s=1.0, rate_limit_burst=3) as api:
        key, other = await api.key_for("acme"), await api.key_for("globex")
        answers = [await _post(api, key, {"query": "{ __typename }"}) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        refused = _refused(answers[-1], "rate_limit_per_s", status=429)
        assert refused["errors"][0]["extensions"]["value"] == 1.0 and int(answers[-1].headers["retry-after"]) >= 1
        assert (await _post(api, other, {"query": "{ __typename }"})).status_code == 200  # another key has its own bucket


async def _lock_agents(db_url: str) -> tuple[asyncpg.Connection, object]:
    conn = await asyncpg.connect(dsn=db_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
    return conn, tx


async def test_a_statement_past_the_timeout_is_stopped_by_postgresql(db_url) -> None:
    async with running_api(db_url, statement_timeout_ms=300) as api:
        key = await api.key_for("acme")
        conn, tx = await _lock_agents(db_url)  # the agents query now waits for the lock
        try:
            answer = await _post(api, key, {"query": "{ agents { nodes { id } } }"})
        finally:
            await tx.rollback()
            await conn.close()
        refused = _refused(answer, "statement_timeout_ms")
        assert "STATEMENT_TIMEOUT_MS" in refused["errors"][0]["message"]
        assert data((await _post(api, key, {"query": "{ agents { nodes { id } } }"})).json())  # the pool is fine after


async def test_a_request_past_the_deadline_is_stopped(db_url) -> None:
    async with running_api(db_url, statement_timeout_ms=0, request_timeout_s=0.5) as api:
        key = await api.key_for("acme")
        conn, tx = await _lock_agents(db_url)
        try:
            answer = await _post(api, key, {"query": "{ agents { nodes { id } } }"})
        finally:
            await tx.rollback()
            await conn.close()
        _refused(answer, "request_timeout_s", status=504)
        assert data((await _post(api, key, {"query": "{ agents { nodes { id } } }"})).json())


async def test_automatic_persisted_queries(api, key) -> None:
    query = "{ agents { nodes { id } } }"
    digest = hashlib.sha256(query.encode()).hexdigest()
    by_hash = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    unknown = (await _post(api, key, by_hash)).json()
    assert unknown["errors"][0]["message"] == "PersistedQueryNotFound" and error_codes(unknown) == ["BAD_USER_INPUT"]
    assert data((await _post(api, key, {"query": query, **by_hash})).json())["agents"]["nodes"]
    assert data((await _post(api, key, by_hash)).json())["agents"]["nodes"]  # the hash alone now
    by_get = await api.client.get("/graphql", params={"extensions": json.dumps(by_hash["extensions"])}, headers={"Authorization": f"Bearer {key}"})
    assert data(by_get.json())["agents"]["nodes"]
    wrong = {"query": "{ __typename }", **by_hash}
    assert error_codes((await _post(api, key, wrong)).json()) == ["BAD_USER_INPUT"]


async def test_only_allow_listed_documents_run_when_configured(db_url, tmp_path: Path) -> None:
    allowed = "query Agents { agents { nodes { id } } }"
    path = tmp_path / "allowed.json"
    path.write_text(json.dumps([allowed]))
    async with running_api(db_url, persisted_queries="only", persisted_queries_file=path) as api:
        key = await api.key_for("acme")
        digest = hashlib.sha256(allowed.encode()).hexdigest()
        assert data((await _post(api, key, {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}})).json())
        assert data((await _post(api, key, {"query": allowed})).json())
        refused = await _post(api, key, {"query": "{ agents { nodes { id name } } }"}, Accept=GRAPHQL_RESPONSE)
        assert refused.status_code == 403 and error_codes(refused.json()) == ["FORBIDDEN"]


async def test_production_closes_introspection_graphiql_and_metrics(db_url) -> None:
    async with running_api(db_url, environment="production", introspection=False, graphiql=False) as api:
        key = await api.key_for("acme")
        closed = (await _post(api, key, {"query": "{ __schema { queryType { name } } }"})).json()
        assert error_codes(closed) == ["FORBIDDEN"] and "schema.graphql" in closed["errors"][0]["message"]
        assert data((await _post(api, key, {"query": "{ __typename agents { nodes { id } } }"})).json())
        page = await api.client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 406 and "graphiql" not in page.text.lower()  # no page to give a browser
        assert (await api.client.get("/metrics")).status_code == 404
    async with running_api(db_url, environment="production", introspection=True, metrics_token="s3cret") as api:
        key = await api.key_for("acme")
        assert data((await _post(api, key, {"query": "{ __schema { queryType { name } } }"})).json())
        assert (await api.client.get("/metrics")).status_code == 401
        metrics = await api.client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert metrics.status_code == 200 and "graphql_document_cache_bytes" in metrics.text
        assert "graphql_ws_sockets_open 0" in metrics.text


async def test_cors_only_for_configured_origins_and_security_headers(db_url) -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    async with running_api(db_url) as api:
        answer = await api.client.options("/graphql", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        page = await api.client.get("/graphql", headers={"Accept": "text/html"})
        assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert (await api.client.get("/healthz")).headers["x-content-type-options"] == "nosniff"
    async with running_api(db_url, cors_origins=("https://app.example.com",)) as api:
        answer = await api.client.options("/graphql", headers=preflight)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example.com"
        other = await api.client.options("/graphql", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_memory_stays_flat_under_refused_documents(db_url: str, tmp_path: Path) -> None:
    key = cli("create-api-key", "--workspace", "mem", db_url=db_url, data_dir=tmp_path).stdout.strip().splitlines()[-1]
    with ServerProcess(db_url=db_url, data_dir=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            async def refuse(i: int, n: int) -> None:
                query = "{ " + " ".join(f"a{i}_{j}: __typename" for j in range(n)) + " }"
                answer = await client.post("/graphql", json={"query": query})
                assert error_codes(answer.json()) == ["LIMIT_EXCEEDED"], answer.text[:200]

            for i in range(3):  # warm up the allocator and the caches
                await refuse(i, 60_000)
            before = _rss_kib(server.process.pid)
            for i in range(3, 23):  # 20 distinct documents of about 1 MB, over MAX_TOKENS
                await refuse(i, 55_000)
            for i in range(23, 223):  # 200 distinct documents under MAX_TOKENS but over MAX_ALIASES
                await refuse(i, 1_500)
            after = _rss_kib(server.process.pid)
    assert after - before < 30 * 1024, (before, after)  # today's figure: well under 10 MiB


async def test_limits_hold_over_real_http(db_url: str, tmp_path: Path) -> None:
    """The same refusals from a real uvicorn server: sizes, shapes, rate, and a keyless request not read."""
    key = cli("create-api-key", "--workspace", "lim", db_url=db_url, data_dir=tmp_path).stdout.strip().splitlines()[-1]
    env = {"RATE_LIMIT_PER_S": "1", "RATE_LIMIT_BURST": "6"}
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            auth = {"Authorization": f"Bearer {key}"}

            async def chunks():  # no Content-Length: the limit holds while reading
                for _ in range(40):
                    yield b"x" * 65_536

            keyless = await client.post("/graphql", content=chunks(), headers={"Content-Type": "application/json"})
            assert keyless.status_code == 401 and error_codes(keyless.json()) == ["UNAUTHENTICATED"]
            streamed = await client.post("/graphql", content=chunks(), headers={**auth, "Content-Type": "application/json"})
            _refused(streamed, "max_body_bytes", status=413)
            _refused(await client.post("/graphql", json={"query": _nested(10)}, headers=auth), "max_depth")
            pages = "{ " + " ".join(f"p{i}: calls(first: 100) {{ nodes {{ id agent {{ id }} }} }}" for i in range(80)) + " }"
            _refused(await client.post("/graphql", json={"query": pages}, headers=auth), "max_cost")
            assert data((await client.post("/graphql", json={"query": "{ __typename }"}, headers=auth)).json())
            answers = [await client.post("/graphql", json={"query": "{ __typename }"}, headers=auth) for _ in range(4)]
            assert answers[-1].status_code == 429 and answers[-1].headers["retry-after"]
        log = server.log_path.read_text()
    assert "Traceback" not in log
