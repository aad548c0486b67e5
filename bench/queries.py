"""Query benchmark: a page of 50 calls with agent, version and analysis, over HTTP, 100,000 calls loaded.

    .venv/bin/python -m bench.queries [--calls 100000] [--clients 16] [--seconds 15] [--warmup 2]
                                      [--scenarios first,deep,filter] [--walk-seconds 120]

It makes a fresh database (on DATABASE_URL's server, else an embedded PostgreSQL), loads N calls of the
demo generator spread over 3 voice agents with 4 versions each, every finished call with one current
INITIAL analysis result and its charge line (bulk COPY, not the importer), starts one server process
(`python -m graphql_api serve`, workers off) and runs closed-loop clients against it, one keep-alive
HTTP/1.1 connection each, from a deliberately small client so that most of the 2 cores go to the server.

Scenarios:
  first   the newest page: calls(first: 50)
  deep    calls(first: 50, after: <cursor>) with cursors taken at random from a walk over the whole list
  filter  calls(first: 50, filter: {versions: [1], successful: true})

Per scenario it prints requests, req/s, latency percentiles, SQL statements per request (from /metrics
deltas over the measured window), response size, the ratio to DESIGN.md's reference numbers and the
CPU each process used. Results go to bench/results/queries-<timestamp>.json. The database is dropped
at the end, also on errors and Ctrl-C.
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
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import psutil

from graphql_api.analysis.pricing import cost_usd, is_waived
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
        step = time.perf_counter()
        async with conn.transaction():  # the draft-is-latest check is deferred to the commit
            await conn.copy_records_to_table("agents", records=agent_rows, columns=["workspace_id", "agent_id", "name", "channel", "created_at"])
            await conn.copy_records_to_table("agent_versions", records=version_rows, columns=[
                "workspace_id", "agent_id", "version", "is_published", "title", "summary_prompt", "successful_prompt",
                "user_sentiment_prompt", "data_fields", "model", "created_at", "config_updated_at", "published_at"])
        for chunk in range(0, len(conversations), 20_000):
            await conn.copy_records_to_table("conversations", records=conversations[chunk: chunk + 20_000], columns=list(_CONVERSATION_COLUMNS), timeout=600)
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


# ---- the cursor walk -------------------------------------------------------------------------


async def walk(host: str, port: int, key: str, max_pages: int, max_seconds: float) -> dict[str, Any]:
    """Page through the whole list with the largest page, collecting (calls before, cursor) positions."""
    conn = Connection(host, port)
    positions: list[tuple[int, str]] = []
    latencies: list[float] = []
    seen, after, complete = 0, None, False
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(max_pages):
            if time.monotonic() > deadline:
                break
            data, _, elapsed = await graphql(conn, post_request(host, port, key, QUERY_WALK, {"after": after} if after else None))
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


async def run_scenario(
    name: str, description: str, requests: list[bytes], check: Callable[[dict[str, Any]], str | None],
    args: argparse.Namespace, host: str, port: int, cpu: CpuMeter,
) -> dict[str, Any]:
    control = Connection(host, port)

    # One request alone, fully checked, after one that warms the key cache: no concurrency noise in its count.
    await graphql(control, requests[0])
    before = await fetch_metrics(host, port)
    data, size, _ = await graphql(control, requests[0])
    after = await fetch_metrics(host, port)
    await control.close()
    if problem := check(data):
        raise HttpError(f"{name}: {problem}")
    isolated_statements = after["sql_statements_total"] - before["sql_statements_total"]

    conns = [Connection(host, port) for _ in range(args.clients)]
    await asyncio.gather(*(c.open() for c in conns))
    phase = 0  # 0 warm-up, 1 measured, 2 stopping
    latencies: list[float] = []
    window_bytes = 0
    errors: list[str] = []
    error_count = 0
    checked = 0
    total_sent = 0
    max_per_client = int((args.warmup + args.seconds + 5) * 10_000)  # a count bound above any plausible rate

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
    try:
        await asyncio.sleep(args.warmup)
        m0 = await fetch_metrics(host, port)
        c0 = cpu.snapshot()
        phase = 1
        t0 = time.perf_counter()
        end = t0 + args.seconds
        while time.perf_counter() < end and error_count <= args.max_errors and not all(t.done() for t in tasks):
            await asyncio.sleep(min(0.25, max(0.0, end - time.perf_counter())))
        phase = 2
        t1 = time.perf_counter()
        c1 = cpu.snapshot()
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

    window = t1 - t0
    ordered = sorted(latencies)
    n = len(ordered)
    d_requests = m1["graphql_http_requests_total"] - m0["graphql_http_requests_total"]
    d_statements = m1["sql_statements_total"] - m0["sql_statements_total"]
    rate = n / window if window > 0 else 0.0
    return {
        "scenario": name,
        "description": description,
        "distinct_requests": len(requests),
        "clients": args.clients,
        "window_s": round(window, 3),
        "requests": n,
        "req_per_s": round(rate, 1),
        "latency_ms": {
            "p50": round(percentile(ordered, 50) * 1000, 2), "p90": round(percentile(ordered, 90) * 1000, 2),
            "p99": round(percentile(ordered, 99) * 1000, 2), "max": round(ordered[-1] * 1000, 2) if ordered else None,
            "mean": round(statistics.fmean(ordered) * 1000, 2) if ordered else None,
        },
        "sql_statements_per_request": round(d_statements / d_requests, 3) if d_requests else None,
        "sql_statements_isolated_request": isolated_statements,
        "server_requests_in_window": int(d_requests),
        "response_bytes_mean": round(window_bytes / n) if n else size,
        "responses_fully_checked": checked,
        "errors": error_count,
        "error_samples": errors,
        "vs_reference": {ref: round(rate / value, 2) for ref, value in REFERENCE.items()},
        "cpu": CpuMeter.delta(c0, c1),
    }


def print_scenario(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    print(f"\n[{r['scenario']}] {r['description']}")
    print(f"  {r['clients']} clients, {r['window_s']:.1f}s measured: {r['requests']} requests, {r['req_per_s']:.1f} req/s")
    print(f"  latency ms: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}  (mean {lat['mean']:.1f})")
    print(f"  SQL statements per request: {r['sql_statements_per_request']} over the window "
          f"({r['server_requests_in_window']} server-side requests), {r['sql_statements_isolated_request']:.0f} for one request alone")
    print(f"  response: {r['response_bytes_mean'] / 1024:.1f} KiB; {r['responses_fully_checked']} responses fully parsed and checked, "
          f"{r['errors']} errors")
    print("  vs DESIGN.md: " + ", ".join(f"{ratio:.2f}x {ref} (~{REFERENCE[ref]:.0f})" for ref, ratio in r["vs_reference"].items()))
    print("  " + describe_cpu(r["cpu"]))
    for sample in r["error_samples"]:
        print(f"  error: {sample}")


async def benchmark(args: argparse.Namespace, url: str, data_dir: Path) -> dict[str, Any]:
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

    server = ServerProcess(db_url=url, data_dir=data_dir, env={"RUN_WORKERS": "0"})
    try:
        await asyncio.to_thread(server.wait_ready, 60)
        host, port = "127.0.0.1", server.port
        cpu = CpuMeter(server.process.pid, urlsplit(url).path.lstrip("/"))
        print(f"server ready on {server.base_url} (pid {server.process.pid}); "
              f"{args.clients} clients, {args.warmup:.0f}s warm-up, {args.seconds:.0f}s measured per scenario", flush=True)
        scenarios: list[dict[str, Any]] = []
        wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
        for name in wanted:
            if name == "first":
                reqs = [post_request(host, port, key, QUERY_FIRST)]
                result = await run_scenario(name, f"newest page: calls(first: {PAGE}) with agent, version, analysis",
                                            reqs, check_page(expect_full=True), args, host, port, cpu)
            elif name == "deep":
                walked = await walk(host, port, key, max_pages=args.calls // WALK_PAGE + 3, max_seconds=args.walk_seconds)
                positions = walked.pop("positions")
                report["walk"] = walked
                print(f"\nwalked {walked['pages']} pages of {WALK_PAGE} ({walked['calls_seen']:,} calls, "
                      f"{'the whole list' if walked['complete'] else 'stopped by --walk-seconds'}) in {walked['seconds']:.1f}s; "
                      f"page p50 {walked['first_pages_p50_ms']} ms for the first 10 pages, {walked['last_pages_p50_ms']} ms for the last 10",
                      flush=True)
                if walked["complete"] and walked["calls_seen"] != load["calls"]:
                    raise HttpError(f"the walk saw {walked['calls_seen']} calls, {load['calls']} were loaded")
                total = walked["calls_seen"] if walked["complete"] else math.inf
                usable = [cursor for seen, cursor in positions if total - seen >= PAGE]
                if not usable:
                    raise HttpError("the walk collected no cursor")
                reqs = [post_request(host, port, key, QUERY_DEEP, {"after": cursor}) for cursor in usable]
                depth = statistics.median(seen for seen, _ in positions if total - seen >= PAGE)
                result = await run_scenario(
                    name, f"calls(first: {PAGE}, after: cursor), {len(reqs)} cursors spread over the list (median offset {depth:,.0f})",
                    reqs, check_page(expect_full=True), args, host, port, cpu)
            elif name == "filter":
                reqs = [post_request(host, port, key, QUERY_FILTER)]
                result = await run_scenario(name, f"calls(first: {PAGE}, filter: {{versions: [{FILTER_VERSION}], successful: true}})",
                                            reqs, check_page(expect_full=True, node_check=_filter_check), args, host, port, cpu)
            else:
                raise SystemExit(f"unknown scenario {name!r}; choose from first, deep, filter")
            scenarios.append(result)
            print_scenario(result)
        report["scenarios"] = scenarios
        rss = psutil.Process(server.process.pid).memory_info().rss
        report["server_rss_mib"] = round(rss / 2**20, 1)
    finally:
        code = server.stop()
        report["server_exit_code"] = code
        report["server_log"] = str(server.log_path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queries", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000, help="calls to load (default 100000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, one connection each (default 16)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per scenario (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each window (default 2)")
    parser.add_argument("--scenarios", default="first,deep,filter", help="comma-separated: first, deep, filter")
    parser.add_argument("--walk-seconds", type=float, default=120.0, help="time limit of the cursor walk for `deep` (default 120)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds (default 30)")
    parser.add_argument("--sample-every", type=int, default=50, help="fully parse and check every Nth response (default 50); the rest: status line and an \"errors\" scan")
    parser.add_argument("--max-errors", type=int, default=100, help="stop a scenario after this many errors (default 100)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the demo data generator (default 7)")
    args = parser.parse_args(argv)
    if args.calls < PAGE * 4 or args.clients < 1 or args.seconds <= 0 or args.sample_every < 1:
        parser.error(f"--calls must be at least {PAGE * 4}, --clients at least 1, --seconds and --sample-every positive")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="gqlapi-bench-queries-data-"))
    report: dict[str, Any] | None = None
    failed = False
    try:
        with bench_database() as url:
            report = asyncio.run(benchmark(args, url, data_dir))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception:
        failed = True
        logs = sorted(data_dir.glob("server-*.log"))
        if logs:
            print(f"server log ({logs[-1]}), last lines:\n" + "\n".join(logs[-1].read_text().splitlines()[-30:]), file=sys.stderr)
        raise
    finally:
        if not failed:
            shutil.rmtree(data_dir, ignore_errors=True)

    assert report is not None
    report["total_runtime_s"] = round(time.perf_counter() - started, 1)
    report.pop("server_log", None)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"queries-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nsummary ({report['load']['calls']:,} calls, {args.clients} clients, one server process, {os.cpu_count()} cores):")
    for r in report.get("scenarios", []):
        lat = r["latency_ms"]
        print(f"  {r['scenario']:<7} {r['req_per_s']:7.1f} req/s  p50 {lat['p50']:7.1f} ms  p99 {lat['p99']:7.1f} ms  "
              f"{r['sql_statements_per_request']} SQL/request  {r['vs_reference']['PostGraphile']:.2f}x PostGraphile  "
              f"{r['vs_reference']['tuned Strawberry']:.2f}x tuned Strawberry  errors {r['errors']}")
    print(f"results: {out}")
    print(f"total runtime {report['total_runtime_s']:.0f}s (load {report['load']['total_s']:.0f}s)")
    return 1 if any(r["errors"] for r in report.get("scenarios", [])) else 0


if __name__ == "__main__":
    sys.exit(main())
