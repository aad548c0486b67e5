"""Exports (docs/export.md) over real HTTP from a server process: an agent's current results and a rerun job's items as
CSV and JSON lines, read back and compared with what GraphQL says of the same rows; the filter means what
`calls(filter:)` means; keys, refusals, a large export, a failure mid-stream, and the terminal client."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import random
import secrets
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from bench.export import load_results
from graphql_api.__main__ import main
from graphql_api.app import create_app
from graphql_api.client import RecordCounter
from graphql_api.db import with_database
from graphql_api.testing.processes import ServerProcess, cli, free_port
from tests.conftest import data, running_api
from tests.conftest import test_settings as settings_for
from tests.factories import call, chat, chat_agent, load, voice_agent
from tests.terminal import run_in_terminal

AGENT = "agent_exp"
VISIT = {"type": "enum", "name": "visit_type", "description": "Visit", "choices": ["cleaning", "checkup"]}
NOTES = {"type": "string", "name": "notes", "description": "Anything else"}
PARTY = {"type": "number", "name": "party_size", "description": "People"}
FOLLOW_UP = {"type": "boolean", "name": "follow_up", "description": "Call back?"}
# Where each custom data field has its column: the latest config's fields in order (the draft, edited after the job),
# then those only older configs had: the job's snapshot, version 1, version 0. `stray` is in no config: nowhere.
FIELDS = ["visit_type", "mood", "follow_up", "party_size", "notes"]
JOB_FIELDS = ["visit_type", "follow_up"]
TRICKY = 'Smith, "Jr."\nsecond line; ünïcødé ✓ 日本語 🎉\r\nthird'
BULK_ROWS = 5_000


def _analysis(summary: str | None, successful: bool | None, sentiment: str, custom: dict[str, Any]) -> dict[str, Any]:
    return {"call_summary": summary, "call_successful": successful, "user_sentiment": sentiment, "in_voicemail": False,
            "custom_analysis_data": custom}


def _records() -> list[dict[str, Any]]:
    agents = [voice_agent(AGENT, 0, data=[NOTES, VISIT]), voice_agent(AGENT, 1, data=[VISIT, PARTY]),
              voice_agent(AGENT, 2, published=False, data=[VISIT, FOLLOW_UP]), chat_agent("agent_chat1", 0)]
    analyses = [
        _analysis(TRICKY, True, "Positive", {"notes": TRICKY, "visit_type": "checkup", "stray": "written nowhere"}),
        _analysis("Booked, thanks", False, "Negative", {"notes": {"nested": ["a,b", 1, None]}, "visit_type": None}),
        _analysis(None, None, "Neutral", {"notes": ["x", "y"], "party_size": 2.5}),
        _analysis("=HYPERLINK(\"x\")", True, "Neutral", {"party_size": 3, "visit_type": "cleaning"}),
        _analysis("ok", False, "Positive", {"party_size": None, "visit_type": "checkup", "follow_up": True}),
        _analysis("ok", True, "Unknown", {}),
    ]
    # Version 0's calls keep their imported results (the job reruns versions 1 and 2): the tricky ones are theirs.
    calls = [call(f"call_{i:02d}", agent_id=AGENT, version=i % 3, minute=i,
                  call_analysis=analyses[i // 3 if i % 3 == 0 else i % len(analyses)]) for i in range(12)]
    calls += [call("call_err", agent_id=AGENT, version=1, minute=30, status="error"),  # analyzed by the offline analyzer
              call("call_live", agent_id=AGENT, version=1, minute=31, status="ongoing")]  # nothing to analyze yet
    chats = [chat(f"chat_{i}", minute=i) for i in range(3)]
    return agents + calls + chats


@dataclass
class World:
    base_url: str
    key: str
    other_key: str
    job_id: str
    other_job_id: str
    db_url: str

    def get(self, path: str, params: Any = None, *, key: str | None = "own", **kwargs: Any) -> httpx.Response:
        key = self.key if key == "own" else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.base_url + path, params=params, headers=headers, timeout=30, **kwargs)

    def gql(self, query: str, variables: dict | None = None, *, key: str | None = None) -> dict:
        response = httpx.post(self.base_url + "/graphql", json={"query": query, "variables": variables or {}},
                              headers={"Authorization": f"Bearer {key or self.key}"}, timeout=30)
        return data(response.json())


@pytest.fixture(scope="module")
async def export_db(server_url: str, template_db: str) -> AsyncIterator[str]:
    # One database for the module: its data and its rerun job are made once, and the tests only read them.
    name = f"gqlapi_export_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn=with_database(server_url, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    await admin.close()
    yield with_database(server_url, name)
    admin = await asyncpg.connect(dsn=with_database(server_url, "postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="module")
async def world(export_db: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_api(export_db) as api:
        key, other_key = await api.key_for("acme"), await api.key_for("other")
        await load(api, "acme", _records())
        await load(api, "other", [voice_agent("agent_other", 0), call("call_other", agent_id="agent_other")])
        conn = await asyncpg.connect(dsn=export_db)
        try:
            await load_results(conn, workspace_id=await api.workspace_id("acme"), agent_id="agent_bulk", rows=BULK_ROWS)
        finally:
            await conn.close()
    data_dir = tmp_path_factory.mktemp("export")
    with ServerProcess(db_url=export_db, data_dir=data_dir) as server:
        world = World(server.base_url, key, other_key, "", "", export_db)
        rerun = "mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id } } }"
        world.job_id = world.gql(rerun, {"input": {"agentId": AGENT, "filter": {"versions": [1, 2]}}})[
            "rerunAnalysis"]["job"]["id"]
        world.other_job_id = world.gql(rerun, {"input": {"agentId": "agent_other"}}, key=other_key)[
            "rerunAnalysis"]["job"]["id"]
        for _ in range(300):
            status = world.gql("query($id: ID!) { rerunJob(id: $id) { status } }", {"id": world.job_id})
            if status["rerunJob"]["status"] == "SUCCEEDED":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the rerun did not succeed: {status}")
        conn = await asyncpg.connect(dsn=export_db)
        try:
            # An item that failed, as the offline analyzer never does: its error is text to escape, its result none.
            await conn.execute("""UPDATE rerun_items SET status = 'FAILED', result_id = NULL,
                                  error = 'model answered "no", twice' || E'\\n' || 'ünïcødé'
                                  WHERE job_id = $1 AND conversation_id = 'call_04'""", world.job_id)
        finally:
            await conn.close()
        # After the job, the draft drops follow_up and adds mood: follow_up stays a column through the job's snapshot.
        world.gql("""mutation { updateDraftPrompts(agentId: "agent_exp", input: { dataFields: [
            { name: "visit_type", type: ENUM, choices: ["cleaning", "checkup"] }, { name: "mood", type: STRING }
        ] }) { version } }""")
        yield world


# ---- what GraphQL says of the same rows -----------------------------------------------------------------------------

RESULT = "id trigger model agentVersion { version } summary successful userSentiment inVoicemail inputTokens " \
         "outputTokens costUsd charged createdAt customData evaluation { score } rationale { output }"
CALL = "id callStatus startedAt endedAt durationMs agent { id } agentVersion { version }"
CALLS = f"""query($filter: ConversationFilter) {{ calls(first: 100, filter: $filter) {{
  nodes {{ {CALL} analysis {{ {RESULT} }} }} }} }}"""
ITEMS = f"""query($id: ID!) {{ rerunJob(id: $id) {{ items(first: 100) {{ nodes {{
  status error call {{ {CALL} }} result {{ {RESULT} }}
  previousResult {{ id trigger agentVersion {{ version }} summary successful userSentiment inVoicemail customData }}
}} }} }} }}"""


def _conversation(node: dict) -> dict[str, Any]:
    return {"conversation_id": node["id"], "kind": "CALL", "agent_id": node["agent"]["id"],
            "agent_version": node["agentVersion"]["version"], "status": node["callStatus"],
            "started_at": node["startedAt"], "ended_at": node["endedAt"], "duration_ms": node["durationMs"]}


def _result(result: dict | None, fields: list[str]) -> dict[str, Any]:
    result = result or {}
    return {
        "result_id": result.get("id"), "trigger": result.get("trigger"), "model": result.get("model"),
        "result_agent_version": (result.get("agentVersion") or {}).get("version"), "summary": result.get("summary"),
        "successful": result.get("successful"), "user_sentiment": result.get("userSentiment"),
        "in_voicemail": result.get("inVoicemail"), "input_tokens": result.get("inputTokens"),
        "output_tokens": result.get("outputTokens"), "cost_usd": result.get("costUsd"), "charged": result.get("charged"),
        "result_created_at": result.get("createdAt"),
        # These configs judge success with the yes/no prompt and ask for no rationale (tests/test_rubrics.py exports
        # rubric results).
        "evaluation_score": (result.get("evaluation") or {}).get("score"),
        "evaluation": None if result.get("evaluation") is None else result["evaluation"],
        "rationale": None if not result.get("rationale") else result["rationale"],
        "custom_data": {f: result["customData"].get(f) for f in fields} if result else None,
    }


def expected_results(world: World, conversation_filter: dict) -> list[dict[str, Any]]:
    """The JSON lines of an export of agent_exp's calls, as GraphQL's `calls(filter:)` gives them."""
    nodes = world.gql(CALLS, {"filter": {"agentId": AGENT, **conversation_filter}})["calls"]["nodes"]
    return [{**_conversation(node), **_result(node["analysis"], FIELDS)} for node in nodes]


def expected_items(world: World) -> list[dict[str, Any]]:
    items = world.gql(ITEMS, {"id": world.job_id})["rerunJob"]["items"]["nodes"]
    rows = []
    for item in items:
        previous = item["previousResult"] or {}
        rows.append({
            **_conversation(item["call"]), "item_status": item["status"], "error": item["error"],
            **_result(item["result"], JOB_FIELDS),
            "previous_result_id": previous.get("id"), "previous_trigger": previous.get("trigger"),
            "previous_agent_version": (previous.get("agentVersion") or {}).get("version"),
            "previous_summary": previous.get("summary"), "previous_successful": previous.get("successful"),
            "previous_user_sentiment": previous.get("userSentiment"), "previous_in_voicemail": previous.get("inVoicemail"),
            "previous_custom_data": {f: previous["customData"].get(f) for f in JOB_FIELDS} if previous else None,
        })
    return rows


def _cell(value: Any) -> str:
    """A CSV field as docs/export.md says: null empty, booleans true/false, objects, lists and numbers as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def as_csv(row: dict[str, Any]) -> dict[str, str]:
    flat = {}
    for name, value in row.items():
        if name.endswith("custom_data"):
            fields = JOB_FIELDS if "item_status" in row else FIELDS
            flat.update({f"{name}.{f}": _cell((value or {}).get(f)) for f in fields})
        else:
            flat[name] = _cell(value)
    return flat


def read_csv(text: str) -> list[dict[str, str]]:
    records = list(csv.reader(io.StringIO(text, newline="")))
    header, rows = records[0], records[1:]
    assert all(len(row) == len(header) for row in rows)
    return [dict(zip(header, row)) for row in rows]


def read_jsonl(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.split("\n")[:-1]]


# ---- the tests ----------------------------------------------------------------------------------------------------


def test_an_agents_results_as_csv_are_what_graphql_says_with_custom_fields_as_columns(world: World) -> None:
    response = world.get("/export/results", {"agentId": AGENT, "format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith(f'attachment; filename="{AGENT}-results-')
    assert response.headers["content-disposition"].endswith('.csv"')
    header = next(csv.reader(io.StringIO(response.text)))
    assert header[-len(FIELDS):] == [f"custom_data.{f}" for f in FIELDS]
    assert "stray" not in response.text  # a key of no config is written nowhere
    rows = read_csv(response.text)
    expected = expected_results(world, {})
    assert rows == [as_csv(row) for row in expected]
    assert len(rows) == 14
    tricky = next(row for row in rows if row["conversation_id"] == "call_00")
    assert tricky["summary"] == tricky["custom_data.notes"] == TRICKY
    assert tricky["successful"] == "true" and tricky["cost_usd"] == "0.00000000"
    live = next(row for row in rows if row["conversation_id"] == "call_live")
    assert live["status"] == "ONGOING" and live["result_id"] == "" and live["custom_data.visit_type"] == ""
    # Booleans and JSON values of custom data, nulls as empty fields; the RFC 4180 quoting is csv's own.
    assert {rows_of["custom_data.notes"] for rows_of in rows} >= {'{"nested":["a,b",1,null]}', '["x","y"]', ""}
    assert '"Smith, ""Jr.""' in response.text and response.text.endswith("\r\n")


def test_an_agents_results_as_json_lines_are_what_graphql_says_with_custom_data_nested(world: World) -> None:
    response = world.get("/export/results", {"agentId": AGENT, "format": "jsonl"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"].endswith('.jsonl"')
    lines = read_jsonl(response.text)
    assert lines == expected_results(world, {})
    first = lines[-1]  # the oldest call, call_00
    assert first["conversation_id"] == "call_00" and first["custom_data"]["notes"] == TRICKY
    assert isinstance(first["cost_usd"], str) and isinstance(first["agent_version"], int)
    assert list(first["custom_data"]) == FIELDS
    assert next(line for line in lines if line["conversation_id"] == "call_live")["custom_data"] is None


def test_a_chat_agents_results_are_its_chats(world: World) -> None:
    lines = read_jsonl(world.get("/export/results", {"agentId": "agent_chat1", "format": "jsonl"}).text)
    chats = world.gql('{ chats(first: 100, filter: { agentId: "agent_chat1" }) { nodes { id chatStatus '
                      'analysis { summary customData } } } }')["chats"]["nodes"]
    assert [(line["conversation_id"], line["kind"], line["status"], line["summary"], line["in_voicemail"])
            for line in lines] == [(c["id"], "CHAT", c["chatStatus"], c["analysis"]["summary"], None) for c in chats]
    assert [line["custom_data"] for line in lines] == [
        {"refund_issued": c["analysis"]["customData"].get("refund_issued")} for c in chats]


T = "2025-11-13T00:{:02d}:00Z"


@pytest.mark.parametrize("graphql_filter, params", [
    ({"versions": [1]}, {"versions": "1"}),
    ({"versions": [0, 2]}, [("versions", "0"), ("versions", "2")]),
    ({"versions": [0, 2]}, {"versions": "0,2"}),
    ({"successful": False}, {"successful": "false"}),
    ({"successful": True, "status": ["ENDED"]}, {"successful": "TRUE", "status": "ended"}),
    ({"userSentiment": ["POSITIVE", "NEUTRAL"]}, {"userSentiment": "positive,NEUTRAL"}),
    ({"status": ["ERROR", "ONGOING"]}, [("status", "ERROR"), ("status", "ongoing")]),
    ({"startedAfter": T.format(3), "startedBefore": T.format(9)}, {"startedAfter": T.format(3),
                                                                   "startedBefore": T.format(9)}),
    ({"startedAfter": "2025-11-13T01:03:00+01:00"}, {"startedAfter": "2025-11-13T01:03:00+01:00"}),
    ({"versions": [1], "userSentiment": ["NEGATIVE"], "successful": False}, {"versions": "1",
                                                                            "userSentiment": "NEGATIVE",
                                                                            "successful": "false"}),
])
def test_the_filter_selects_what_graphql_calls_filter_selects(world: World, graphql_filter: dict, params: Any) -> None:
    query = [("agentId", AGENT), ("format", "jsonl"), *(params.items() if isinstance(params, dict) else params)]
    response = world.get("/export/results", query)
    assert response.status_code == 200, response.text
    lines = read_jsonl(response.text)
    expected = expected_results(world, graphql_filter)
    assert [line["conversation_id"] for line in lines] == [row["conversation_id"] for row in expected]
    assert lines == expected


def test_a_jobs_items_have_their_new_result_next_to_the_previous_one(world: World) -> None:
    expected = expected_items(world)
    assert len(expected) == 9 and {row["item_status"] for row in expected} == {"SUCCEEDED", "FAILED"}
    response = world.get(f"/export/jobs/{world.job_id}", {"format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="{world.job_id}.csv"'
    rows = read_csv(response.text)
    assert list(rows[0])[-len(JOB_FIELDS):] == [f"previous_custom_data.{f}" for f in JOB_FIELDS]
    assert rows == [as_csv(row) for row in expected]
    failed = next(row for row in rows if row["item_status"] == "FAILED")
    assert failed["error"] == 'model answered "no", twice\nünïcødé' and failed["result_id"] == ""
    assert failed["previous_result_id"] != ""
    lines = read_jsonl(world.get(f"/export/jobs/{world.job_id}", {"format": "jsonl"}).text)
    assert lines == expected
    assert all(line["trigger"] == "RERUN" for line in lines if line["item_status"] == "SUCCEEDED")


def test_a_large_export_streams_every_row(world: World) -> None:
    for fmt in ("csv", "jsonl"):
        with httpx.stream("GET", world.base_url + "/export/results", params={"agentId": "agent_bulk", "format": fmt},
                          headers={"Authorization": f"Bearer {world.key}"}, timeout=60) as response:
            assert response.status_code == 200
            assert "content-length" not in response.headers  # chunked: written as it is read
            chunks = list(response.iter_bytes())
        text = b"".join(chunks).decode()
        rows = read_csv(text) if fmt == "csv" else read_jsonl(text)
        assert len(rows) == BULK_ROWS, fmt
        ids = [row["conversation_id"] for row in rows]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == BULK_ROWS  # newest first, each once
        last = rows[-1]
        assert last["conversation_id"] == "agent_bulk_0000001"
        custom = last["custom_data"] if fmt == "jsonl" else {k.split(".", 1)[1]: v for k, v in last.items()
                                                              if k.startswith("custom_data.")}
        assert custom == ({"visit_type": "checkup", "party_size": 2, "notes": 'Prefers "afternoons", after 2 PM'}
                          if fmt == "jsonl" else
                          {"visit_type": "checkup", "party_size": "2", "notes": 'Prefers "afternoons", after 2 PM'})


def test_the_clients_row_count_follows_csv_quoting_across_chunks() -> None:
    # Rows whose fields hold newlines, CRLFs, quotes and commas, cut into chunks anywhere: the count is csv's.
    rng = random.Random(7)
    pieces = ["a", ",", '"', '""', "\n", "\r\n", "é", "#truncated,", " "]
    rows = [["".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12))) for _ in range(3)] for _ in range(300)]
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows([["h1", "h2", "h3"], *rows])
    body = text.getvalue().encode()
    for _ in range(20):
        counter = RecordCounter("csv")
        position = 0
        while position < len(body):
            size = rng.randrange(1, 200)
            counter.feed(body[position:position + size])
            position += size
        assert counter.rows == len(rows) and not counter.truncated
    counter.feed(b"#truncated,Internal server error.\r\n")
    assert counter.truncated and counter.rows == len(rows)


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    (error,) = response.json()["errors"]
    return {"status": response.status_code, "message": error["message"], **error["extensions"]}


def test_keys_and_refusals_are_coded_json_errors_before_any_row(world: World) -> None:
    results = {"agentId": AGENT}
    assert _error(world.get("/export/results", results, key=None)) | {"message": ""} == {
        "status": 401, "code": "UNAUTHENTICATED", "message": ""}
    unknown_key = world.get("/export/results", results, key="ak_not_a_key")
    assert _error(unknown_key)["code"] == "UNAUTHENTICATED" and unknown_key.headers["www-authenticate"].startswith("Bearer")
    for params, argument in [
        ({**results, "format": "xml"}, "format"),
        ({**results, "limit": "10"}, "limit"),
        ({"format": "csv"}, "agentId"),
        ({**results, "versions": "one"}, "versions"),
        ({**results, "versions": "-1"}, "versions"),
        ({**results, "status": "finished"}, "status"),
        ({**results, "userSentiment": "happy"}, "userSentiment"),
        ({**results, "successful": "yes"}, "successful"),
        ({**results, "startedAfter": "yesterday"}, "startedAfter"),
        ({**results, "startedAfter": T.format(9), "startedBefore": T.format(3)}, "startedAfter"),
        ({**results, "agentId": "a\x00b"}, "agentId"),
        ([("agentId", AGENT), ("format", "csv"), ("format", "jsonl")], "format"),
        ({"agentId": "agent_chat1", "status": "registered"}, "status"),
    ]:
        refused = _error(world.get("/export/results", params))
        assert (refused["status"], refused["code"], refused.get("argument")) == (400, "BAD_USER_INPUT", argument), params
    assert _error(world.get(f"/export/jobs/{world.job_id}", {"agentId": AGENT}))["argument"] == "agentId"
    wrong_method = httpx.post(world.base_url + "/export/results", params=results,
                              headers={"Authorization": f"Bearer {world.key}"})
    assert _error(wrong_method)["status"] == 405 and wrong_method.headers["allow"] == "GET"


def test_another_workspaces_agent_or_job_is_not_found_like_an_unknown_one(world: World) -> None:
    for path, params, foreign, unknown in [
        ("/export/results", "agentId", "agent_other", "agent_nowhere"),
        ("/export/jobs/{}", None, world.other_job_id, "rerun_00000000000000000000"),
    ]:
        answers = {}
        for ident in (foreign, unknown):
            response = world.get(path.format(ident), {params: ident} if params else None)
            answers[ident] = _error(response)
        assert answers[foreign]["status"] == answers[unknown]["status"] == 404
        assert answers[foreign]["code"] == answers[unknown]["code"] == "NOT_FOUND"
        assert answers[foreign]["message"].replace(foreign, "ID") == answers[unknown]["message"].replace(unknown, "ID")
    # The other workspace's own key reads its own job.
    mine = world.get(f"/export/jobs/{world.other_job_id}", {"format": "jsonl"}, key=world.other_key)
    assert [line["conversation_id"] for line in read_jsonl(mine.text)] == ["call_other"]


async def test_a_key_over_its_rate_is_refused_like_on_graphql(world: World) -> None:
    async with running_api(world.db_url, rate_limit_per_s=0.01, rate_limit_burst=1) as api:
        headers = {"Authorization": f"Bearer {world.key}"}
        first = await api.client.get("/export/results", params={"agentId": "agent_chat1"}, headers=headers)
        assert first.status_code == 200
        second = await api.client.get("/export/results", params={"agentId": "agent_chat1"}, headers=headers)
        assert _error(second)["code"] == "LIMIT_EXCEEDED" and second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1


async def test_a_first_page_past_the_statement_timeout_is_refused_before_any_row(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_api(world.db_url) as api:
        read = api.db.fetch_all

        async def cut_off(name: str, /, **params: Any) -> Any:
            if name == "export_results_page":
                raise asyncpg.QueryCanceledError("canceling statement due to statement timeout")
            return await read(name, **params)

        monkeypatch.setattr(api.db, "fetch_all", cut_off)
        response = await api.client.get("/export/results", params={"agentId": AGENT},
                                        headers={"Authorization": f"Bearer {world.key}"})
        refused = _error(response)
        assert (refused["status"], refused["code"], refused["limit"]) == (504, "LIMIT_EXCEEDED", "statement_timeout_ms")


@contextlib.contextmanager
def served_in_this_process(db_url: str) -> Iterator[tuple[str, Any]]:
    """The app under uvicorn in a thread of this process, so that a test can reach into its services."""
    app = create_app(settings_for(db_url), db_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(15)


def test_a_failure_mid_stream_ends_the_export_with_a_marker_and_a_cut_connection(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    with served_in_this_process(world.db_url) as (base_url, app):
        db = app.state.services.db
        read = db.fetch_all

        async def second_page_fails(name: str, /, **params: Any) -> Any:
            if name == "export_results_page" and params["after_id"] != "":
                raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
            return await read(name, **params)

        monkeypatch.setattr(db, "fetch_all", second_page_fails)
        for fmt, marker in (("csv", b"#truncated,Internal server error."), ("jsonl", b'{"errors":[{"message":')):
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):  # the chunked body never ends
                with httpx.stream("GET", base_url + "/export/results", params={"agentId": "agent_bulk", "format": fmt},
                                  headers={"Authorization": f"Bearer {world.key}"}, timeout=30) as response:
                    assert response.status_code == 200
                    for chunk in response.iter_raw():
                        received += chunk
            head, _, last = received.rstrip(b"\r\n").rpartition(b"\n")
            assert last.startswith(marker), last
            rows = read_csv(head.decode() + "\n") if fmt == "csv" else read_jsonl(head.decode() + "\n")
            assert len(rows) == 1000  # one page, then the marker

        # The terminal client tells it, exits 1, and leaves no file.
        output = tmp_path / "bulk.csv"
        status = main(["export", "--agent", "agent_bulk", "--output", str(output), "--url", base_url,
                       "--key", world.key])
        assert status == 1
        assert "the export was cut short after 1,000 rows" in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == []


def test_the_terminal_client_writes_an_export_to_a_file_or_stdout(world: World, tmp_path: Path) -> None:
    env = {"ANALYSIS_API_URL": world.base_url, "ANALYSIS_API_KEY": world.key, "COLUMNS": "200"}

    def run(*args: str, **extra: str) -> Any:
        return cli(*args, db_url="postgresql://unused@127.0.0.1:1/none", data_dir=tmp_path, env={**env, **extra},
                   timeout=60)

    output = tmp_path / "v0.csv"
    written = run("export", "--agent", AGENT, "--version", "0", "--status", "ended", "--successful", "--output",
                  str(output))
    assert written.returncode == 0, written.stderr
    direct = world.get("/export/results", {"agentId": AGENT, "versions": "0", "status": "ENDED", "successful": "true"})
    assert output.read_bytes() == direct.content
    assert len(read_csv(direct.text)) == 2
    assert written.stdout.startswith(f"exported 2 rows ({len(direct.content)} bytes, csv) to {output} in ")

    piped = run("export", "--job", world.job_id, "--format", "jsonl")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == world.get(f"/export/jobs/{world.job_id}", {"format": "jsonl"}).text
    assert "exported 9 rows" in piped.stderr and "to stdout" in piped.stderr

    # A reader of stdout that stops early ends it quietly.
    head = subprocess.run(f"{shlex.quote(sys.executable)} -m graphql_api export --agent agent_bulk --format jsonl | head -1",
                          shell=True, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert head.returncode == 0 and json.loads(head.stdout)["agent_id"] == "agent_bulk" and head.stderr == ""

    missing = run("export", "--agent", "agent_nowhere", "--output", str(tmp_path / "none.csv"))
    assert missing.returncode == 2 and "(NOT_FOUND)" in missing.stderr, missing.stderr
    refused = run("export", "--job", world.job_id, ANALYSIS_API_KEY="ak_not_a_key")
    assert refused.returncode == 3 and "(UNAUTHENTICATED)" in refused.stderr, refused.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["v0.csv"]


def test_the_terminal_client_refuses_bad_usage_with_exit_2(world: World, capsys: pytest.CaptureFixture) -> None:
    server = ["--url", world.base_url, "--key", world.key]
    for args, reason in [
        ([], "nothing to export"),
        (["--job", world.job_id, "--agent", AGENT], "not both"),
        (["--job", world.job_id, "--version", "1"], "filters apply to --agent only"),
        (["--agent", AGENT, "--format", "xml"], "--format is csv or jsonl"),
        (["--agent", AGENT, "--status", "finished"], "`status` takes"),
        (["--agent", AGENT, "--output", "/nonexistent/dir/x.csv"], "can't write /nonexistent/dir/x.csv"),
    ]:
        assert main(["export", *args, *server]) == 2, args
        assert reason in capsys.readouterr().err, args


def test_the_terminal_client_shows_rows_written_on_a_terminal(world: World, tmp_path: Path) -> None:
    env = {**os.environ, "ANALYSIS_API_URL": world.base_url, "ANALYSIS_API_KEY": world.key}
    output = tmp_path / "bulk.jsonl"
    shown = run_in_terminal([sys.executable, "-m", "graphql_api", "export", "--agent", "agent_bulk", "--format", "jsonl",
                             "-o", str(output)], env=env)
    assert shown.status == 0, shown.text
    assert "exporting" in shown.text and " rows, " in shown.text, shown.text  # the progress line, drawn meanwhile
    assert f"exported {BULK_ROWS:,} rows" in shown.text
    assert len(read_jsonl(output.read_text())) == BULK_ROWS
