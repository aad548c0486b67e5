"""Query benchmark: a page of 50 calls with agent, version and analysis, over HTTP, 100,000 calls loaded, against
this project's server and PostGraphile 5 on the same database in the same run.

    .venv/bin/python -m bench.queries [--calls 100000] [--clients 16] [--seconds 15] [--warmup 2] [--rounds 3]
                                      [--scenarios first,deep,filter] [--walk-seconds 120] [--no-peer]

It makes a fresh database (on DATABASE_URL's server, else an embedded PostgreSQL), loads N calls of the
demo generator spread over 3 voice agents with 4 versions each, every finished call with one current
INITIAL analysis result and its charge line (bulk COPY, not the importer), starts one server process
(`python -m graphql_api serve`, workers off) and, when node and npm are on PATH, one PostGraphile process
(bench/postgraphile.py: amber preset, installed by `npm ci` into bench/peer/node_modules when missing, the
same database and role, the workspace given as a condition on workspace_id since there is no row-level
security). Closed-loop clients, one keep-alive HTTP/1.1 connection each, from a deliberately small client so
that most of the 2 cores go to the server under load.

Scenarios (the peer's documents alias its field names to ours, so both answers have one shape):
  first   the newest page: calls(first: 50)
  deep    calls(first: 50, after: <cursor>) with cursors taken at random from a walk over the whole list
          (the peer's cursors from a walk of its own, at the same positions)
  filter  calls(first: 50, filter: {versions: [1], successful: true})

Before measuring a scenario it checks that both servers return the same page (the same calls in the same
order with the same agent, version and analysis values). Then it alternates the servers over --rounds rounds
(ours, peer, ours, peer ...), each round --seconds/--rounds long after its warm-up, and prints per server:
requests, req/s, latency percentiles, CPU per request of the server process and of PostgreSQL, SQL statements
per request (ours, from /metrics), response size; and the ratio ours/peer. Results go to
bench/results/queries-<timestamp>.json. The database is dropped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import psutil

from bench import postgraphile
from graphql_api.analysis.pricing import cost_usd, is_waived
from graphql_api.config import Settings
from graphql_api.db import Database, EmbeddedPostgres, migrate, with_database
from graphql_api.demo_data import iter_demo_records
from graphql_api.importer import parse_agent_version, parse_conversation
from graphql_api.testing.processes import ServerProcess
from graphql_api.workspaces import create_api_key

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORKSPACE = "bench"
PAGE = 50
WALK_PAGE = 100  # the server's page cap
REFERENCE = {"PostGraphile": 480.0, "naive Strawberry": 49.0, "tuned Strawberry": 146.0}  # DESIGN.md section 5

_SELECTION = """edges { cursor node { id callStatus startedAt agent { id name } agentVersion { version isPublished }
  analysis { summary successful userSentiment costUsd } } } pageInfo { hasNextPage endCursor }"""
QUERY_FIRST = "{ calls(first: %d) { %s } }" % (PAGE, _SELECTION)
QUERY_DEEP = "query Deep($after: String) { calls(first: %d, after: $after) { %s } }" % (PAGE, _SELECTION)
FILTER_VERSION = 1
QUERY_FILTER = "{ calls(first: %d, filter: {versions: [%d], successful: true}) { %s } }" % (PAGE, FILTER_VERSION, _SELECTION)
QUERY_WALK = "query Walk($after: String) { calls(first: %d, after: $after) { edges { cursor } pageInfo { hasNextPage endCursor } } }" % WALK_PAGE
# Workers off; the read engine's check of each compiled answer against the resolvers (on in tests) off as well.
SERVER_ENV = {"RUN_WORKERS": "0", "READ_ENGINE_VERIFY": "0"}
OURS = {"first": QUERY_FIRST, "deep": QUERY_DEEP, "filter": QUERY_FILTER, "walk": QUERY_WALK}

# The same selection in PostGraphile's amber naming, aliased to ours; `analysis` is the computed column
# conversations_analysis() (bench/peer/database.sql). The order is ours: sort_at, then conversation_id, newest first.
_PEER_SELECTION = """edges { cursor node { id: conversationId callStatus: status startedAt
  agent: agentByWorkspaceIdAndAgentId { id: agentId name }
  agentVersion: agentVersionByWorkspaceIdAndAgentIdAndAgentVersion { version isPublished }
  analysis { summary successful userSentiment costUsd } } } pageInfo { hasNextPage endCursor }"""
_PEER_ORDER = "orderBy: [SORT_AT_DESC, CONVERSATION_ID_DESC]"


def peer_documents(workspace_id: int) -> dict[str, str]:
    """The peer's documents of each scenario; the workspace scope is a condition (no row-level security here)."""
    scope = f'workspaceId: "{workspace_id}", kind: "CALL"'
    page = "calls: allConversations(first: %d%s, condition: {%s}, " + _PEER_ORDER + ") { %s }"
    return {
        "first": "{ %s }" % (page % (PAGE, "", scope, _PEER_SELECTION)),
        "deep": "query Deep($after: Cursor) { %s }" % (page % (PAGE, ", after: $after", scope, _PEER_SELECTION)),
        "filter": "{ %s }" % (page % (PAGE, "", f"{scope}, agentVersion: {FILTER_VERSION}, currentSuccessful: true", _PEER_SELECTION)),
        "walk": "query Walk($after: Cursor) { %s }" % (
            page % (WALK_PAGE, ", after: $after", scope, "edges { cursor } pageInfo { hasNextPage endCursor }")),
    }


# ---- database ---------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A fresh database on DATABASE_URL's server or on an embedded one; dropped afterwards, whatever happens."""
    base_url = os.environ.get("DATABASE_URL") or None
    embedded = None
    if base_url is None:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="gqlapi-bench-queries-pg-")), delete_on_stop=True)
        base_url = embedded.start()
    name = f"gqlapi_bench_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn=base_url, timeout=30)
        try:
            await conn.execute(sql, timeout=120)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
        try:
            yield with_database(base_url, name)
        finally:
            # Ctrl-C during the drop must not leave the database behind: ignore it until the drop is done.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                print(f"dropped database {name}")
            finally:
                signal.signal(signal.SIGINT, previous)
    finally:
        if embedded is not None:
            embedded.stop()


async def create_key(url: str) -> tuple[str, int]:
    db = Database(url, min_size=1, max_size=2)
    await db.connect()
    try:
        workspace, key = await create_api_key(db=db, workspace_name=WORKSPACE)
    finally:
        await db.disconnect()
    return key, workspace.id


# ---- data -------------------------------------------------------------------------------------

_CONVERSATION_COLUMNS = (
    "workspace_id", "conversation_id", "kind", "agent_id", "agent_version", "conversation_type", "status",
    "direction", "from_number", "to_number", "started_at", "ended_at", "duration_ms", "disconnection_reason",
    "transcript", "utterances", "metadata", "sort_at", "created_at", "updated_at",
)
_RESULT_COLUMNS = (
    "workspace_id", "conversation_id", "trigger", "agent_id", "agent_version", "model", "summary", "successful",
    "user_sentiment", "in_voicemail", "custom_data", "input_tokens", "output_tokens", "cost_usd", "charged",
    "is_current", "created_at",
)
_SUCCESS_CUES = ("booked", "scheduled", "you're all set", "confirmed", "see you", "consultation on", "refund")
_NEGATIVE_CUES = ("stop calling", "not interested", "terrible", "harassment", "annoy", "ridiculous", "frustrat", "waste")
_POSITIVE_CUES = ("thank", "great", "perfect", "awesome", "appreciate", "wonderful", "sounds good")
_NUMBER = re.compile(r"\$?(\d[\d,]*(?:\.\d+)?)")
_FINISHED = ("not_connected", "ended", "error")


def _clip(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def synthetic_analysis(conv: dict[str, Any], version: dict[str, Any]) -> dict[str, Any]:
    """A plausible initial analysis in a few microseconds (the offline analyzer takes ~0.6 ms a call)."""
    status, reason = conv["status"], conv["disconnection_reason"] or ""
    users = [u.get("content", "") for u in conv["utterances"] if u["role"] == "user"]
    agents = [u.get("content", "") for u in conv["utterances"] if u["role"] == "agent"]
    user_text = " ".join(users).lower()
    voicemail = reason == "voicemail_reached"
    if status == "not_connected" or not conv["utterances"]:
        summary, successful, sentiment = f"The call did not connect ({reason.replace('_', ' ') or 'no answer'}).", False, "UNKNOWN"
    elif voicemail:
        summary, successful, sentiment = "The call reached voicemail; the agent left a message asking for a call back.", False, "UNKNOWN"
    elif status == "error":
        summary, successful, sentiment = f"The call broke off after {len(conv['utterances'])} turns ({reason}).", False, "NEUTRAL"
    else:
        first, last = (users[0] if users else ""), (agents[-1] if agents else "")
        summary = f'The user said "{_clip(first)}" and the agent replied "{_clip(last)}".'
        closing = " ".join(agents[-2:]).lower()
        successful = any(cue in closing for cue in _SUCCESS_CUES)
        if any(cue in user_text for cue in _NEGATIVE_CUES):
            sentiment = "NEGATIVE"
        elif any(cue in user_text for cue in _POSITIVE_CUES):
            sentiment = "POSITIVE"
        else:
            sentiment = "NEUTRAL"
    custom: dict[str, Any] = {}
    for field in version["data_fields"]:
        kind, value = field["type"], None
        if status == "ended" and not voicemail:
            if kind == "BOOLEAN":
                value = successful
            elif kind == "ENUM":
                value = next((c for c in field.get("choices") or () if c in user_text), None)
            elif kind == "NUMBER":
                m = _NUMBER.search(user_text)
                value = float(m.group(1).replace(",", "")) if m else None
            else:
                value = next((e for e in field.get("examples") or () if e.lower() in user_text), None)
        custom[field["name"]] = value
        if value is None and field.get("required"):
            successful = False  # a required field left empty makes the conversation unsuccessful
    input_tokens = (len(conv["transcript"]) + version["_prompt_chars"]) // 4
    output_tokens = len(summary) // 4 + 12 * len(custom) + 20
    model = version["model"]
    at = (conv["ended_at"] or conv["started_at"]) + timedelta(seconds=4)
    return {
        "model": model, "summary": summary, "successful": successful, "user_sentiment": sentiment,
        "in_voicemail": voicemail, "custom_data": custom, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "cost_usd": cost_usd(model, input_tokens, output_tokens),
        "charged": not is_waived(model, "initial"), "created_at": at,
    }


def build_rows(workspace_id: int, calls: int, seed: int) -> tuple[list[tuple], list[tuple], list[tuple], list[tuple], dict[str, Any]]:
    """Agents, versions, conversations and analysis results as COPY rows, from the demo generator.

    The demo data has two voice agents; a third one is a copy of the first (another clinic line with the
    same version history) and takes every other call of the first, so the calls spread over 3 agents.
    """
    versions: dict[tuple[str, int], dict[str, Any]] = {}
    agents: dict[str, dict[str, Any]] = {}
    conversations: list[tuple] = []
    results: list[tuple] = []
    clone_of: str | None = None
    clone_id = "agent_" + hashlib.sha256(f"bench-{seed}".encode()).hexdigest()[:10]
    flip = 0
    for record in iter_demo_records(seed, calls=calls, chats=0):
        if "call_id" not in record:
            parsed = parse_agent_version(record)
            if parsed["channel"] != "VOICE":
                continue  # the demo chat agent has no calls
            stamp = datetime.fromtimestamp(record["last_modification_timestamp"] / 1000).astimezone()
            parsed["_stamp"] = stamp
            parsed["_prompt_chars"] = 600 + sum(len(p or "") for p in (parsed["summary_prompt"], parsed["successful_prompt"], parsed["user_sentiment_prompt"])) + sum(len(json.dumps(f)) for f in parsed["data_fields"])
            copies = [(parsed["agent_id"], parsed["name"], parsed)]
            if clone_of is None:
                clone_of = parsed["agent_id"]
            if parsed["agent_id"] == clone_of:
                copies.append((clone_id, parsed["name"].replace("Riverside", "Lakeside").replace("Receptionist", "Receptionist (east line)"), {**parsed, "agent_id": clone_id}))
            for agent_id, name, version in copies:
                versions[(agent_id, version["version"])] = version
                first = agents.setdefault(agent_id, {"agent_id": agent_id, "name": name, "created": stamp})
                first["created"] = min(first["created"], stamp)
            continue
        conv = parse_conversation(record)
        if conv["agent_id"] == clone_of:
            flip ^= 1
            if flip:
                conv["agent_id"] = clone_id
        version = versions[(conv["agent_id"], conv["agent_version"])]
        sort_at = conv["started_at"] or datetime.now().astimezone()
        conversations.append((
            workspace_id, conv["conversation_id"], "CALL", conv["agent_id"], conv["agent_version"],
            conv["conversation_type"], conv["status"], conv["direction"], conv["from_number"], conv["to_number"],
            conv["started_at"], conv["ended_at"], conv["duration_ms"], conv["disconnection_reason"], conv["transcript"],
            orjson.dumps(conv["utterances"]).decode(), orjson.dumps(conv["metadata"]).decode(), sort_at, sort_at, sort_at,
        ))
        if conv["status"] in _FINISHED:
            a = synthetic_analysis(conv, version)
            results.append((
                workspace_id, conv["conversation_id"], "INITIAL", conv["agent_id"], conv["agent_version"], a["model"],
                a["summary"], a["successful"], a["user_sentiment"], a["in_voicemail"], orjson.dumps(a["custom_data"]).decode(),
                a["input_tokens"], a["output_tokens"], a["cost_usd"], a["charged"], True, a["created_at"],
            ))
    agent_rows = [(workspace_id, a["agent_id"], a["name"], "VOICE", a["created"] - timedelta(days=3)) for a in agents.values()]
    version_rows = []
    for (agent_id, number), v in sorted(versions.items()):
        published = v["is_published"]
        version_rows.append((
            workspace_id, agent_id, number, published, v["title"], v["summary_prompt"], v["successful_prompt"],
            v["user_sentiment_prompt"], orjson.dumps(v["data_fields"]).decode(), v["model"],
            v["_stamp"] - timedelta(hours=2), v["_stamp"], v["_stamp"] if published else None,
        ))
    counts = {"agents": len(agent_rows), "agent_versions": len(version_rows), "calls": len(conversations), "analysis_results": len(results)}
    return agent_rows, version_rows, conversations, results, counts


async def load_data(url: str, workspace_id: int, calls: int, seed: int) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    agent_rows, version_rows, conversations, results, counts = build_rows(workspace_id, calls, seed)
    timings["generate_s"] = time.perf_counter() - started
    conn = await asyncpg.connect(dsn=url, timeout=30)
    try:
        await conn.execute("SET synchronous_commit = off")
        columns = list(_CONVERSATION_COLUMNS)
        if await conn.fetchval(
                """SELECT count(*) = 2 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'conversations' AND column_name IN ('current_successful', 'current_sentiment')"""):
            # Migration 009's copy of the current result on the call, written with the call: the trigger that keeps
            # it then finds nothing to change, instead of leaving a dead version of every call behind.
            at = [_RESULT_COLUMNS.index(c) for c in ("conversation_id", "successful", "user_sentiment")]
            current = {r[at[0]]: (r[at[1]], r[at[2]]) for r in results}
            conversations = [(*row, *current.get(row[1], (None, None))) for row in conversations]
            columns += ["current_successful", "current_sentiment"]
        step = time.perf_counter()
        async with conn.transaction():  # the draft-is-latest check is deferred to the commit
            await conn.copy_records_to_table("agents", records=agent_rows, columns=["workspace_id", "agent_id", "name", "channel", "created_at"])
            await conn.copy_records_to_table("agent_versions", records=version_rows, columns=[
                "workspace_id", "agent_id", "version", "is_published", "title", "summary_prompt", "successful_prompt",
                "user_sentiment_prompt", "data_fields", "model", "created_at", "config_updated_at", "published_at"])
        for chunk in range(0, len(conversations), 20_000):
            await conn.copy_records_to_table("conversations", records=conversations[chunk: chunk + 20_000], columns=columns, timeout=600)
        timings["copy_calls_s"] = time.perf_counter() - step
        step = time.perf_counter()
        for chunk in range(0, len(results), 50_000):
            await conn.copy_records_to_table("analysis_results", records=results[chunk: chunk + 50_000], columns=list(_RESULT_COLUMNS), timeout=600)
        charged = await conn.execute(
            """INSERT INTO charges (workspace_id, analysis_result_id, conversation_id, model, input_tokens, output_tokens,
                                   amount_usd, reason, waived, created_at)
               SELECT workspace_id, id, conversation_id, model, input_tokens, output_tokens, cost_usd, 'initial', NOT charged,
                      created_at
               FROM analysis_results WHERE workspace_id = $1 ORDER BY id""",
            workspace_id, timeout=600,
        )
        timings["copy_analysis_and_charges_s"] = time.perf_counter() - step
        step = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) agents, agent_versions, conversations, analysis_results, charges", timeout=600)
        timings["vacuum_analyze_s"] = time.perf_counter() - step
        check = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM conversations WHERE workspace_id = $1) AS calls,
                      (SELECT count(*) FROM analysis_results WHERE workspace_id = $1 AND is_current) AS current_results,
                      (SELECT count(*) FROM charges WHERE workspace_id = $1) AS charges,
                      (SELECT count(DISTINCT agent_id) FROM conversations WHERE workspace_id = $1) AS agents_with_calls,
                      pg_size_pretty(pg_database_size(current_database())) AS database_size""",
            workspace_id,
        )
    finally:
        await conn.close()
    timings["total_s"] = time.perf_counter() - started
    assert check["calls"] == counts["calls"] and check["current_results"] == counts["analysis_results"], dict(check)
    assert charged == f"INSERT 0 {counts['analysis_results']}", charged
    return {**counts, "charges": check["charges"], "agents_with_calls": check["agents_with_calls"],
            "database_size": check["database_size"], **{k: round(v, 2) for k, v in timings.items()}}


# ---- a minimal HTTP/1.1 keep-alive client ----------------------------------------------------


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive connection; requests are pre-encoded bytes, responses need a Content-Length."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.reader = self.writer = None

    async def reopen(self) -> None:
        await self.close()
        await self.open()

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        if not head.startswith(b"http/1.1 "):
            raise HttpError(f"not an HTTP/1.1 response: {head[:40]!r}")
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise HttpError("response without Content-Length")
        length = int(head[at + 17: head.index(b"\r\n", at + 2)])
        body = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in head:
            await self.close()
        return status, body


def post_request(host: str, port: int, key: str, query: str, variables: dict[str, Any] | None = None) -> bytes:
    body = orjson.dumps({"query": query, "variables": variables} if variables else {"query": query})
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get_request(host: str, port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/plain\r\n\r\n".encode()


async def fetch_metrics(host: str, port: int) -> dict[str, float]:
    """The server's counters, on a connection of its own (an idle keep-alive one would have been closed)."""
    conn = Connection(host, port)
    try:
        async with asyncio.timeout(30):
            status, body = await conn.send(get_request(host, port, "/metrics"))
    finally:
        await conn.close()
    if status != 200:
        raise HttpError(f"/metrics answered {status}")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


async def graphql(conn: Connection, request: bytes) -> tuple[dict[str, Any], int, float]:
    started = time.perf_counter()
    async with asyncio.timeout(60):
        status, body = await conn.send(request)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise HttpError(f"HTTP {status}: {body[:500]!r}")
    doc = orjson.loads(body)
    if doc.get("errors"):
        raise HttpError(f"GraphQL errors: {doc['errors']}")
    return doc["data"], len(body), elapsed


# ---- CPU accounting ----------------------------------------------------------------------------


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends connected to the bench database (found by their process title)."""
    out = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and database in " ".join(proc.info["cmdline"] or ()):
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
    return out


def _machine_busy() -> float:
    """CPU seconds all processes of the machine have used (every core's non-idle time)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


class CpuMeter:
    def __init__(self, server_pid: int, database: str):
        self.server = psutil.Process(server_pid)
        self.database = database

    def snapshot(self) -> dict[str, Any]:
        t = self.server.cpu_times()
        return {"wall": time.perf_counter(), "client": _client_cpu(), "server": t.user + t.system,
                "postgres": _postgres_cpu(self.database), "machine": _machine_busy()}

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        wall = b["wall"] - a["wall"]
        pg = sum(v - a["postgres"].get(pid, 0.0) for pid, v in b["postgres"].items())
        out = {
            "wall_s": round(wall, 3),
            "client_cpu_s": round(b["client"] - a["client"], 3),
            "server_cpu_s": round(b["server"] - a["server"], 3),
            "postgres_cpu_s": round(pg, 3),
            "machine_busy_cpu_s": round(b["machine"] - a["machine"], 3),
        }
        ours = out["client_cpu_s"] + out["server_cpu_s"] + out["postgres_cpu_s"]
        out["other_processes_cpu_s"] = round(max(0.0, out["machine_busy_cpu_s"] - ours), 3)
        return out


def describe_cpu(cpu: dict[str, float]) -> str:
    wall = cpu["wall_s"] or 1.0
    parts = [f"{name} {cpu[f'{name}_cpu_s']:.1f}s ({cpu[f'{name}_cpu_s'] / wall:.2f} core)" for name in ("client", "server", "postgres")]
    total = sum(cpu[f"{n}_cpu_s"] for n in ("client", "server", "postgres")) / wall
    return (f"CPU over {wall:.1f}s wall: " + ", ".join(parts) + f"; together {total:.2f} of {os.cpu_count()} cores, "
            f"other processes on the machine {cpu['other_processes_cpu_s'] / wall:.2f} core")


# ---- the servers -------------------------------------------------------------------------------


@dataclass
class Target:
    """One server under load: ours or the peer, with its documents for each scenario."""

    name: str  # "ours" or "peer"
    label: str
    host: str
    port: int
    pid: int
    key: str
    documents: dict[str, str]
    cpu: CpuMeter
    has_metrics: bool  # ours serves /metrics (SQL statements); the peer doesn't

    def request(self, scenario: str, variables: dict[str, Any] | None = None) -> bytes:
        return post_request(self.host, self.port, self.key, self.documents[scenario], variables)


def _comparable(node: dict[str, Any]) -> dict[str, Any]:
    """A call as both servers must agree on it: the peer writes statuses in lower case, costs with all 8 decimals."""
    analysis = node["analysis"]
    return {
        "id": node["id"], "callStatus": node["callStatus"].upper(),
        "startedAt": datetime.fromisoformat(node["startedAt"]) if node["startedAt"] else None,
        "agent": node["agent"], "agentVersion": node["agentVersion"],
        "analysis": analysis and {**analysis, "costUsd": Decimal(analysis["costUsd"])},
    }


def same_page(ours: dict[str, Any], peer: dict[str, Any]) -> str | None:
    """None when both pages hold the same calls in the same order with the same values (cursors aside)."""
    a, b = ours["calls"], peer["calls"]
    ids_a = [e["node"]["id"] for e in a["edges"]]
    ids_b = [e["node"]["id"] for e in b["edges"]]
    if ids_a != ids_b:
        at = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), min(len(ids_a), len(ids_b)))
        return f"different calls from position {at}: ours {len(ids_a)} ({ids_a[at:at + 2]}), peer {len(ids_b)} ({ids_b[at:at + 2]})"
    for x, y in zip(a["edges"], b["edges"]):
        if (cx := _comparable(x["node"])) != (cy := _comparable(y["node"])):
            return f"call {cx['id']}: ours {cx}, peer {cy}"
    if a["pageInfo"]["hasNextPage"] != b["pageInfo"]["hasNextPage"]:
        return f"hasNextPage: ours {a['pageInfo']['hasNextPage']}, peer {b['pageInfo']['hasNextPage']}"
    return None


async def compare(targets: list[Target], pairs: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """Each pair's request to ours and to the peer: the same page from both, or the first difference."""
    ours, peer = (Connection(t.host, t.port) for t in targets)
    calls = 0
    try:
        for request_ours, request_peer in pairs:
            a, _, _ = await graphql(ours, request_ours)
            b, _, _ = await graphql(peer, request_peer)
            if problem := same_page(a, b):
                return {"same": False, "pages": len(pairs), "problem": problem}
            calls += len(a["calls"]["edges"])
    finally:
        await ours.close()
        await peer.close()
    return {"same": True, "pages": len(pairs), "calls": calls}


# ---- the cursor walk -------------------------------------------------------------------------


async def walk(target: Target, max_pages: int, max_seconds: float) -> dict[str, Any]:
    """Page through the whole list with the largest page, collecting (calls before, cursor) positions."""
    conn = Connection(target.host, target.port)
    positions: list[tuple[int, str]] = []
    latencies: list[float] = []
    seen, after, complete = 0, None, False
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(max_pages):
            if time.monotonic() > deadline:
                break
            data, _, elapsed = await graphql(conn, target.request("walk", {"after": after} if after else None))
            latencies.append(elapsed)
            page = data["calls"]
            seen += len(page["edges"])
            after = page["pageInfo"]["endCursor"]
            if after is not None:
                positions.append((seen, after))
            if not page["pageInfo"]["hasNextPage"]:
                complete = True
                break
    finally:
        await conn.close()
    head, tail = latencies[:10], latencies[-10:]
    return {
        "pages": len(latencies), "calls_seen": seen, "complete": complete, "positions": positions,
        "seconds": round(sum(latencies), 2),
        "first_pages_p50_ms": round(statistics.median(head) * 1000, 2) if head else None,
        "last_pages_p50_ms": round(statistics.median(tail) * 1000, 2) if tail else None,
    }


# ---- load scenarios ----------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def check_page(expect_full: bool, node_check: Callable[[dict[str, Any]], str | None] | None = None) -> Callable[[dict[str, Any]], str | None]:
    def check(data: dict[str, Any]) -> str | None:
        page = data["calls"]
        edges = page["edges"]
        if expect_full and len(edges) != PAGE:
            return f"expected {PAGE} edges, got {len(edges)}"
        if len(edges) < PAGE and page["pageInfo"]["hasNextPage"]:
            return "a short page says it has a next page"
        for edge in edges:
            node = edge["node"]
            if not edge["cursor"] or node["agent"] is None or not node["agent"]["name"] or node["agentVersion"] is None:
                return f"incomplete node {node}"
            if node_check is not None and (problem := node_check(node)):
                return problem
        return None

    return check


def _filter_check(node: dict[str, Any]) -> str | None:
    if node["agentVersion"]["version"] != FILTER_VERSION:
        return f"filter by version {FILTER_VERSION} returned version {node['agentVersion']['version']}"
    if not node["analysis"] or node["analysis"]["successful"] is not True:
        return f"filter successful: true returned {node['analysis']}"
    return None


async def run_round(
    target: Target, requests: list[bytes], check: Callable[[dict[str, Any]], str | None], args: argparse.Namespace, seconds: float,
) -> dict[str, Any]:
    """One warm-up and one measured window of closed-loop clients against one server; raw figures."""
    host, port = target.host, target.port
    conns = [Connection(host, port) for _ in range(args.clients)]
    await asyncio.gather(*(c.open() for c in conns))
    phase = 0  # 0 warm-up, 1 measured, 2 stopping
    latencies: list[float] = []
    window_bytes = 0
    errors: list[str] = []
    error_count = 0
    checked = 0
    total_sent = 0
    max_per_client = int((args.warmup + seconds + 5) * 10_000)  # a count bound above any plausible rate

    async def client(index: int) -> None:
        nonlocal window_bytes, error_count, checked, total_sent
        conn = conns[index]
        rnd = random.Random(args.seed * 1000 + index)
        order = list(range(len(requests)))
        rnd.shuffle(order)
        position = 0
        for sent in range(1, max_per_client + 1):
            if phase == 2 or error_count > args.max_errors:
                return
            request = requests[order[position]]
            position = position + 1 if position + 1 < len(order) else 0
            started = time.perf_counter()
            try:
                async with asyncio.timeout(args.timeout):
                    status, body = await conn.send(request)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError, ValueError) as exc:
                error_count += 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(args.timeout):
                        await conn.reopen()
                continue
            elapsed = time.perf_counter() - started
            total_sent += 1
            if phase == 1:
                latencies.append(elapsed)
                window_bytes += len(body)
            problem = None
            if status != 200:
                problem = f"HTTP {status}: {body[:300]!r}"
            elif b'"errors"' in body or sent == 1 or total_sent % args.sample_every == 0:
                doc = orjson.loads(body)
                checked += 1
                problem = f"GraphQL errors: {doc['errors']}" if doc.get("errors") else check(doc["data"])
            if problem:
                error_count += 1
                if len(errors) < 5:
                    errors.append(problem[:500])

    tasks = [asyncio.create_task(client(i)) for i in range(args.clients)]
    m0 = m1 = None
    try:
        await asyncio.sleep(args.warmup)
        if target.has_metrics:
            m0 = await fetch_metrics(host, port)
        c0 = target.cpu.snapshot()
        phase = 1
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end and error_count <= args.max_errors and not all(t.done() for t in tasks):
            await asyncio.sleep(min(0.25, max(0.0, end - time.perf_counter())))
        phase = 2
        t1 = time.perf_counter()
        c1 = target.cpu.snapshot()
        if target.has_metrics:
            m1 = await fetch_metrics(host, port)
        done, pending = await asyncio.wait(tasks, timeout=args.timeout + 5)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in conns))
    out = {
        "window_s": t1 - t0, "latencies": latencies, "bytes": window_bytes, "checked": checked, "errors": error_count,
        "error_samples": errors, "cpu": CpuMeter.delta(c0, c1), "statements": None, "server_requests": None,
    }
    if m0 is not None and m1 is not None:
        out["statements"] = m1["sql_statements_total"] - m0["sql_statements_total"]
        out["server_requests"] = m1["graphql_http_requests_total"] - m0["graphql_http_requests_total"]
    return out


async def isolated_statements(target: Target, request: bytes) -> float | None:
    """SQL statements of one request alone, after one that warms the key cache (ours only: from /metrics)."""
    if not target.has_metrics:
        return None
    control = Connection(target.host, target.port)
    try:
        await graphql(control, request)
        before = await fetch_metrics(target.host, target.port)
        await graphql(control, request)
        after = await fetch_metrics(target.host, target.port)
    finally:
        await control.close()
    return after["sql_statements_total"] - before["sql_statements_total"]


def summarize(target: Target, rounds: list[dict[str, Any]], statements_alone: float | None) -> dict[str, Any]:
    """The rounds of one server in one scenario, pooled: rates over the summed windows, percentiles over all requests."""
    ordered = sorted(x for r in rounds for x in r["latencies"])
    n = len(ordered)
    window = sum(r["window_s"] for r in rounds)
    cpu = {k: round(sum(r["cpu"][k] for r in rounds), 3) for k in rounds[0]["cpu"]}
    statements = sum(r["statements"] for r in rounds) if target.has_metrics else None
    server_requests = sum(r["server_requests"] for r in rounds) if target.has_metrics else None
    per_request = (lambda seconds: round(seconds * 1000 / n, 3) if n else None)
    return {
        "server": target.label,
        "pid": target.pid,
        "rounds": len(rounds),
        "window_s": round(window, 3),
        "requests": n,
        "req_per_s": round(n / window, 1) if window > 0 else 0.0,
        "round_req_per_s": [round(len(r["latencies"]) / r["window_s"], 1) for r in rounds],
        "latency_ms": {
            "p50": round(percentile(ordered, 50) * 1000, 2), "p90": round(percentile(ordered, 90) * 1000, 2),
            "p99": round(percentile(ordered, 99) * 1000, 2), "max": round(ordered[-1] * 1000, 2) if ordered else None,
            "mean": round(statistics.fmean(ordered) * 1000, 2) if ordered else None,
        },
        "server_cpu_ms_per_request": per_request(cpu["server_cpu_s"]),
        "postgres_cpu_ms_per_request": per_request(cpu["postgres_cpu_s"]),
        "client_cpu_ms_per_request": per_request(cpu["client_cpu_s"]),
        "sql_statements_per_request": round(statements / server_requests, 3) if server_requests else None,
        "sql_statements_isolated_request": statements_alone,
        "response_bytes_mean": round(sum(r["bytes"] for r in rounds) / n) if n else None,
        "responses_fully_checked": sum(r["checked"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "error_samples": [s for r in rounds for s in r["error_samples"]][:5],
        "cpu": cpu,
    }


def ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    return {
        "req_per_s": ratio(ours["req_per_s"], peer["req_per_s"]),
        "p50": ratio(ours["latency_ms"]["p50"], peer["latency_ms"]["p50"]),
        "p99": ratio(ours["latency_ms"]["p99"], peer["latency_ms"]["p99"]),
        "server_cpu_per_request": ratio(ours["server_cpu_ms_per_request"], peer["server_cpu_ms_per_request"]),
    }


def print_server(name: str, r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    rounds = ", ".join(f"{x:.0f}" for x in r["round_req_per_s"])
    print(f"  {name + ':':<5} {r['server']}, pid {r['pid']}: {r['rounds']} rounds, {r['window_s']:.1f}s measured, "
          f"{r['requests']} requests, {r['req_per_s']:.1f} req/s (rounds: {rounds})")
    print(f"       latency ms: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}  (mean {lat['mean']:.1f})")
    sql = ""
    if r["sql_statements_per_request"] is not None:
        sql = (f"; SQL statements per request {r['sql_statements_per_request']} "
               f"({r['sql_statements_isolated_request']:.0f} for one request alone)")
    print(f"       CPU per request: server {r['server_cpu_ms_per_request']:.2f} ms, PostgreSQL "
          f"{r['postgres_cpu_ms_per_request']:.2f} ms, client {r['client_cpu_ms_per_request']:.2f} ms{sql}")
    print(f"       response {r['response_bytes_mean'] / 1024:.1f} KiB; {r['responses_fully_checked']} responses fully parsed and "
          f"checked, {r['errors']} errors; " + describe_cpu(r["cpu"]))
    for sample in r["error_samples"]:
        print(f"       error: {sample}")


def print_ratios(r: dict[str, float | None]) -> None:
    def x(v: float | None) -> str:
        return f"{v:.2f}x" if v is not None else "n/a"

    print(f"  ours/peer: {x(r['req_per_s'])} req/s, {x(r['p50'])} p50, {x(r['p99'])} p99, "
          f"{x(r['server_cpu_per_request'])} server CPU per request")


# ---- the run -----------------------------------------------------------------------------------


def prepare_peer(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """Install PostGraphile when missing; returns why the peer is skipped (or None) and what was done."""
    if args.no_peer:
        return "--no-peer", {}
    if reason := postgraphile.unavailable():
        return reason, {}
    info: dict[str, Any] = {"version": postgraphile.locked_version()}
    if not postgraphile.is_installed():
        print(f"installing PostGraphile {info['version']} into {postgraphile.PEER_DIR / 'node_modules'} (npm ci) ...", flush=True)
        try:
            info["install_s"] = round(postgraphile.install(), 1)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as exc:
            return f"npm ci failed ({exc})", info
        print(f"installed in {info['install_s']:.0f}s", flush=True)
    return None, info


async def scenario_requests(
    name: str, targets: list[Target], args: argparse.Namespace, load: dict[str, Any], report: dict[str, Any],
) -> tuple[str, list[list[bytes]], Callable[[dict[str, Any]], str | None], list[tuple[bytes, bytes]]]:
    """The description, each target's requests (index-aligned across targets), the check and the pairs to compare."""
    if name == "first":
        reqs = [[t.request("first")] for t in targets]
        return f"newest page: calls(first: {PAGE}) with agent, version, analysis", reqs, check_page(expect_full=True), []
    if name == "filter":
        reqs = [[t.request("filter")] for t in targets]
        return (f"calls(first: {PAGE}, filter: {{versions: [{FILTER_VERSION}], successful: true}})", reqs,
                check_page(expect_full=True, node_check=_filter_check), [])
    if name != "deep":
        raise SystemExit(f"unknown scenario {name!r}; choose from first, deep, filter")
    walks = []
    for target in targets:
        walked = await walk(target, max_pages=args.calls // WALK_PAGE + 3, max_seconds=args.walk_seconds)
        report.setdefault("walk", {})[target.name] = {k: v for k, v in walked.items() if k != "positions"}
        print(f"\n{target.name}: walked {walked['pages']} pages of {WALK_PAGE} ({walked['calls_seen']:,} calls, "
              f"{'the whole list' if walked['complete'] else 'stopped by --walk-seconds'}) in {walked['seconds']:.1f}s; "
              f"page p50 {walked['first_pages_p50_ms']} ms for the first 10 pages, {walked['last_pages_p50_ms']} ms for the last 10",
              flush=True)
        if walked["complete"] and walked["calls_seen"] != load["calls"]:
            raise HttpError(f"{target.name}: the walk saw {walked['calls_seen']} calls, {load['calls']} were loaded")
        walks.append(walked)
    # Both walks stop at the same positions when they list the same calls; a time-limited one is cut to the shorter.
    count = min(len(w["positions"]) for w in walks)
    seen = [[s for s, _ in w["positions"][:count]] for w in walks]
    if any(s != seen[0] for s in seen):
        raise HttpError("the walks of the two servers stopped at different positions")
    total = walks[0]["calls_seen"] if all(w["complete"] for w in walks) else math.inf
    usable = [i for i, s in enumerate(seen[0]) if total - s >= PAGE]
    if not usable:
        raise HttpError("the walk collected no cursor")
    reqs = [[t.request("deep", {"after": w["positions"][i][1]}) for i in usable] for t, w in zip(targets, walks)]
    depth = statistics.median(seen[0][i] for i in usable)
    spread = sorted({round(k * (len(usable) - 1) / 4) for k in range(5)})  # five cursors from the top to the bottom
    pairs = [(reqs[0][j], reqs[1][j]) for j in spread] if len(targets) == 2 else []
    return (f"calls(first: {PAGE}, after: cursor), {len(usable)} cursors spread over the list (median offset {depth:,.0f})",
            reqs, check_page(expect_full=True), pairs)


async def benchmark(args: argparse.Namespace, url: str, data_dir: Path, peer_info: dict[str, Any] | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL",
        "options": {k: v for k, v in vars(args).items()}, "reference_req_per_s": REFERENCE,
    }
    started = time.perf_counter()
    await migrate(url)
    key, workspace_id = await create_key(url)
    report["setup_s"] = round(time.perf_counter() - started, 2)
    print(f"database ready (migrations, API key) in {report['setup_s']:.1f}s; loading {args.calls:,} calls ...", flush=True)
    load = await load_data(url, workspace_id, args.calls, args.seed)
    report["load"] = load
    print(f"loaded {load['calls']:,} calls over {load['agents_with_calls']} agents ({load['agent_versions']} versions), "
          f"{load['analysis_results']:,} current analysis results and {load['charges']:,} charge lines in {load['total_s']:.1f}s "
          f"(generate {load['generate_s']:.1f}s, COPY calls {load['copy_calls_s']:.1f}s, analysis+charges "
          f"{load['copy_analysis_and_charges_s']:.1f}s, VACUUM ANALYZE {load['vacuum_analyze_s']:.1f}s); database {load['database_size']}",
          flush=True)

    database = urlsplit(url).path.lstrip("/")
    pool_max = Settings.model_fields["db_pool_max"].default  # the peer gets as many connections as ours
    processes: list[ServerProcess] = [ServerProcess(db_url=url, data_dir=data_dir, env=SERVER_ENV)]
    if peer_info is not None:
        peer_info.update(await postgraphile.prepare_database(url))
        processes.append(postgraphile.PeerProcess(db_url=url, data_dir=data_dir, pool_max=pool_max))
        report["peer"] = peer_info
    try:
        for process in processes:
            await asyncio.to_thread(process.wait_ready, 60)
        targets = [Target("ours", "this project (Python)", "127.0.0.1", processes[0].port, processes[0].process.pid, key, OURS,
                          CpuMeter(processes[0].process.pid, database), has_metrics=True)]
        print(f"ours ready on {processes[0].base_url} (pid {processes[0].process.pid})", flush=True)
        if peer_info is not None:
            peer = processes[1]
            targets.append(Target("peer", f"PostGraphile {peer_info['version']} (node {node_version()})", "127.0.0.1", peer.port,
                                  peer.process.pid, key, peer_documents(workspace_id), CpuMeter(peer.process.pid, database),
                                  has_metrics=False))
            print(f"peer ready on {peer.base_url} (pid {peer.process.pid}): PostGraphile {peer_info['version']}, amber preset, "
                  f"one node process, a pool of {pool_max} connections as ours, the same database and role; the workspace "
                  f"scope is the condition workspaceId: \"{workspace_id}\" (no row-level security)\n"
                  f"peer: {peer_info['note']}", flush=True)
        per_round = args.seconds / args.rounds
        print(f"{args.clients} clients; per scenario {args.rounds} rounds of {args.warmup:.0f}s warm-up and {per_round:.1f}s measured "
              f"per server" + (", alternating ours and peer" if len(targets) == 2 else ""), flush=True)

        scenarios: list[dict[str, Any]] = []
        for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
            description, reqs, check, pairs = await scenario_requests(name, targets, args, load, report)
            print(f"\n[{name}] {description}")
            result: dict[str, Any] = {"scenario": name, "description": description, "distinct_requests": len(reqs[0]),
                                      "clients": args.clients}
            if len(targets) == 2:
                same = await compare(targets, pairs or [(reqs[0][0], reqs[1][0])])
                result["same_page"] = same
                if same["same"]:
                    print(f"  same page from both: {same['pages']} page(s), {same['calls']} calls, the same calls in the same "
                          f"order with the same agent, version and analysis values")
                else:
                    print(f"  PAGES DIFFER, the ratio compares different work: {same['problem']}")
            alone = [await isolated_statements(t, r[0]) for t, r in zip(targets, reqs)]
            rounds: list[list[dict[str, Any]]] = [[] for _ in targets]
            for _ in range(args.rounds):
                for i, target in enumerate(targets):
                    rounds[i].append(await run_round(target, reqs[i], check, args, per_round))
            servers = {t.name: summarize(t, r, a) for t, r, a in zip(targets, rounds, alone)}
            result["servers"] = servers
            result["vs_reference"] = {ref: round(servers["ours"]["req_per_s"] / value, 2) for ref, value in REFERENCE.items()}
            for target in targets:
                print_server(target.name, servers[target.name])
            if "peer" in servers:
                result["ours_over_peer"] = ratios(servers["ours"], servers["peer"])
                print_ratios(result["ours_over_peer"])
            else:
                print("  vs DESIGN.md: " + ", ".join(f"{ratio:.2f}x {ref} (~{REFERENCE[ref]:.0f})" for ref, ratio in result["vs_reference"].items()))
            scenarios.append(result)
        report["scenarios"] = scenarios
        report["server_rss_mib"] = {t.name: round(psutil.Process(t.pid).memory_info().rss / 2**20, 1) for t in targets}
    finally:
        report["server_exit_code"] = {p.command: p.stop() for p in processes}
    return report


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queries", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000, help="calls to load (default 100000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, one connection each (default 16)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per scenario and server, split over the rounds (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each round's window (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario, the servers alternating (default 3)")
    parser.add_argument("--scenarios", default="first,deep,filter", help="comma-separated: first, deep, filter")
    parser.add_argument("--walk-seconds", type=float, default=120.0, help="time limit of each cursor walk for `deep` (default 120)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds (default 30)")
    parser.add_argument("--sample-every", type=int, default=50, help="fully parse and check every Nth response (default 50); the rest: status line and an \"errors\" scan")
    parser.add_argument("--max-errors", type=int, default=100, help="stop a round after this many errors (default 100)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the demo data generator (default 7)")
    parser.add_argument("--no-peer", action="store_true", help="measure this project's server alone")
    args = parser.parse_args(argv)
    if args.calls < PAGE * 4 or args.clients < 1 or args.seconds <= 0 or args.sample_every < 1 or args.rounds < 1:
        parser.error(f"--calls must be at least {PAGE * 4}, --clients and --rounds at least 1, --seconds and --sample-every positive")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    skipped, peer_info = prepare_peer(args)
    if skipped:
        print(f"peer (PostGraphile) skipped: {skipped}; measuring this project's server alone", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="gqlapi-bench-queries-data-"))
    report: dict[str, Any] | None = None
    failed = False
    try:
        with bench_database() as url:
            report = asyncio.run(benchmark(args, url, data_dir, None if skipped else peer_info))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception:
        failed = True
        for log in sorted(data_dir.glob("*.log")):
            print(f"{log}, last lines:\n" + "\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
        raise
    finally:
        if not failed:
            shutil.rmtree(data_dir, ignore_errors=True)

    assert report is not None
    if skipped:
        report["peer_skipped"] = skipped
    report["total_runtime_s"] = round(time.perf_counter() - started, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"queries-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nsummary ({report['load']['calls']:,} calls, {args.clients} clients, one process per server, {args.rounds} rounds, "
          f"{os.cpu_count()} cores):")
    for r in report.get("scenarios", []):
        for name, s in r["servers"].items():
            lat = s["latency_ms"]
            print(f"  {r['scenario']:<7} {name:<4} {s['req_per_s']:7.1f} req/s  p50 {lat['p50']:7.1f} ms  p99 {lat['p99']:7.1f} ms  "
                  f"server CPU {s['server_cpu_ms_per_request']:5.2f} ms/request  errors {s['errors']}")
        if "ours_over_peer" in r:
            same = "same page" if r["same_page"]["same"] else "PAGES DIFFER"
            print(f"  {r['scenario']:<7} ours/peer {r['ours_over_peer']['req_per_s']}x req/s, "
                  f"{r['ours_over_peer']['server_cpu_per_request']}x CPU per request ({same})")
    print(f"results: {out}")
    print(f"total runtime {report['total_runtime_s']:.0f}s (load {report['load']['total_s']:.0f}s)")
    failures = any(s["errors"] for r in report.get("scenarios", []) for s in r["servers"].values())
    differ = any(not r["same_page"]["same"] for r in report.get("scenarios", []) if "same_page" in r)
    return 1 if failures or differ else 0


if __name__ == "__main__":
    sys.exit(main())
