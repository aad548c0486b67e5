"""Load test (issue 8): many well-behaved clients with a mixed workload, first alone, then beside a stream of abusive requests.

    make load        or        .venv/bin/python -m bench.load

It makes a fresh database (on DATABASE_URL's server, else an embedded PostgreSQL), loads 20,000 calls over 3 voice
agents in bulk (bench/queries.py's loader) and a few hundred chats of the demo chat agent (through `import`), starts
one server process (`python -m graphql_api serve`, offline analyzer, the server's default limits; only the rate limit
is raised, to LOAD_RATE_LIMIT_PER_S, so that the well-behaved clients, who share one key, are not throttled) and runs:

- well-behaved HTTP clients (httpx, one keep-alive connection each, a random think time between operations):
  pages of calls with agent, version and analysis, agents, a call by id, chats, rerunJobs, draft edits
  (read the draft's revision, then updateDraftPrompts with expectedRevision), rerun dry runs over a filter, small
  reruns of a few explicit call or chat ids, and now and then a rerun cancelled right after it was asked for;
- WebSocket subscribers (graphql-transport-ws) that follow those reruns' rerunProgress to completion;
- in the second phase only, the abusive stream of bench/abuse.py next to them, sent from a process of its own so that
  its client-side work does not delay the event loop that times the well-behaved clients.

Two phases of the same length: the well-behaved clients alone, then with the abusive stream. Per phase it prints the
well-behaved throughput, latency percentiles per operation, errors by `extensions.code` (expected ones such as a CONFLICT
for a stale revision apart from unexpected ones), the server's peak RSS and CPU; for the abusive stream the answers by
status and code with their latency; and the ratio of the well-behaved p99 with and without abuse. A probe then sends
each abusive kind alone to the idle server and prints what one costs it (latency, CPU, memory growth). Results go to
bench/results/load-<timestamp>.json; the exit status is 1 when a well-behaved client saw an unexpected error.

Settings (environment, default in brackets): LOAD_SECONDS per phase [25], LOAD_WARMUP [3], LOAD_CLIENTS [32],
LOAD_SUBSCRIBERS [20], LOAD_THINK_MS mean think time [100], LOAD_TIMEOUT per request [30], LOAD_ABUSERS abusive requests
in flight [3], LOAD_HEAVY_AT_ONCE heavy abusive requests in flight [2], LOAD_ABUSE_TIMEOUT [20], LOAD_ABUSE_PAUSE_MS
[50], LOAD_ABUSE_KINDS comma-separated kinds of bench/abuse.py [all], LOAD_MAX_SERVER_RSS_MIB no heavy abusive request above it [4096], LOAD_CALLS [20000], LOAD_CHATS [300],
LOAD_RATE_LIMIT_PER_S [1000], LOAD_PROBE [1; 0 skips it], LOAD_SEED [7]. `run(seconds=...)` runs it from Python and returns the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import psutil
import websockets

import graphql_api
from bench.abuse import Abuser, AbuseProcess, Target, kinds_named
from bench.queries import CpuMeter, bench_database, create_key, describe_cpu, load_data, percentile
from bench.reruns import server_cpu_seconds, vm_kib
from graphql_api.db import migrate
from graphql_api.demo_data import DEFAULT_NOW_MS, iter_demo_records
from graphql_api.importer import parse_agent_version, record_kind
from graphql_api.testing.processes import ServerProcess, cli

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORKSPACE = "bench"  # bench.queries.create_key's workspace
PHASES = ("alone", "abuse")
FINISHED = ("ended", "not_connected", "error")
DATA_NOW = datetime.fromtimestamp(DEFAULT_NOW_MS / 1000, tz=timezone.utc)  # the demo data's "now"


@dataclass(frozen=True)
class Options:
    seconds: float = 25.0
    warmup: float = 3.0
    clients: int = 32
    subscribers: int = 20
    think_ms: float = 100.0
    timeout: float = 30.0
    abusers: int = 3
    heavy_at_once: int = 2
    abuse_timeout: float = 20.0
    abuse_pause_ms: float = 50.0
    abuse_kinds: str = ""  # comma-separated names of bench/abuse.py's kinds; empty: all
    max_server_rss_mib: int = 4096
    calls: int = 20_000
    chats: int = 300
    rate_limit_per_s: float = 1000.0
    probe: int = 1
    seed: int = 7

    @classmethod
    def from_env(cls) -> Options:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(f"LOAD_{f.name.upper()}")
            if raw not in (None, ""):
                kind = type(getattr(cls, f.name))
                try:
                    values[f.name] = kind(raw)
                except ValueError:
                    raise SystemExit(f"LOAD_{f.name.upper()} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
        return cls(**values)


# ---- the well-behaved workload ------------------------------------------------------------------

CALLS_PAGE = """query CallsPage($first: Int!, $filter: ConversationFilter) { calls(first: $first, filter: $filter) {
  edges { cursor node { id callStatus startedAt durationMs agent { id name } agentVersion { version isPublished }
  analysis { summary successful userSentiment costUsd } } } pageInfo { hasNextPage endCursor } } }"""
CALL = """query Call($id: ID!) { call(id: $id) { id callStatus startedAt transcript agent { id name }
  agentVersion { version isPublished } analysis { id trigger summary successful userSentiment inVoicemail customData costUsd createdAt }
  analysisHistory { id trigger createdAt } } }"""
AGENTS = """query Agents { agents(first: 20) { nodes { id name channel draft { version revision isLatestDraft
  analysisConfig { model summaryPrompt dataFields { name type required } } } } } }"""
CHATS = """query Chats { chats(first: 20) { nodes { id chatStatus startedAt agent { name } analysis { summary successful userSentiment } } } }"""
RERUN_JOBS = """query Jobs { rerunJobs(first: 10) { nodes { id status total succeeded failed canceled pending costUsd createdAt } } }"""
DRAFT = "query Draft($id: ID!) { agent(id: $id) { draft { version revision analysisConfig { summaryPrompt } } } }"
UPDATE = "mutation Edit($agentId: ID!, $input: AnalysisConfigInput!) { updateDraftPrompts(agentId: $agentId, input: $input) { version revision } }"
RERUN = """mutation Rerun($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) {
  job { id status total } estimate { conversations costUsd model configVersion } reused } }"""
CANCEL = "mutation Cancel($id: ID!) { cancelRerun(jobId: $id) { id status canceled } }"
PROGRESS = """subscription Progress($id: ID!) { rerunProgress(jobId: $id) {
  job { id status succeeded failed canceled total } item { conversationId status finishedAt } } }"""

# Operation and weight; an operation may send more than one request (an edit reads the draft first).
MIX = (("callsPage", 24), ("call", 22), ("agents", 8), ("chats", 5), ("rerunJobs", 8), ("editDraft", 10), ("dryRun", 10),
       ("rerun", 9), ("rerunAndCancel", 4))
SUMMARY_PROMPTS = (
    "Summarize the call in two sentences: what the caller wanted and what was agreed.",
    "Write a one-sentence summary of the call, naming the outcome.",
    "Summarize the conversation in at most 40 words, mentioning any booking or refund.",
)
SUBSCRIPTION_KINDS = ("subscribe→snapshot", "subscription→complete")


@dataclass(frozen=True)
class World:
    """What the clients pick from: agents, and the ids of their finished conversations."""

    agents: list[str]
    kind_of: dict[str, str]  # agent id -> CALL or CHAT
    finished: dict[str, list[str]]  # agent id -> finished conversation ids
    call_ids: list[str]
    chats: int


async def read_world(url: str, workspace_id: int) -> World:
    conn = await asyncpg.connect(dsn=url, timeout=30)
    try:
        rows = await conn.fetch("SELECT agent_id, kind, conversation_id, status FROM conversations WHERE workspace_id = $1", workspace_id)
    finally:
        await conn.close()
    kind_of: dict[str, str] = {}
    finished: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        kind_of[row["agent_id"]] = row["kind"]
        if row["status"] in FINISHED:
            finished[row["agent_id"]].append(row["conversation_id"])
    return World(agents=sorted(kind_of), kind_of=kind_of, finished=dict(finished),
                 call_ids=[r["conversation_id"] for r in rows if r["kind"] == "CALL"], chats=sum(r["kind"] == "CHAT" for r in rows))


@dataclass
class PhaseStats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    expected: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexpected: Counter[tuple[str, str]] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    requests: int = 0  # well-behaved HTTP requests
    subscriptions: int = 0
    completed: int = 0
    events: int = 0
    rss_peak_kib: int = 0
    straddled: int = 0  # HTTP requests that started in this phase and ended in the next: counted nowhere

    def error(self, kind: str, code: str, message: str, expected: frozenset[str] = frozenset()) -> None:
        if code in expected:
            self.expected[(kind, code)] += 1
            return
        self.unexpected[(kind, code)] += 1
        if len(self.samples) < 10:
            self.samples.append(f"{kind}: {code}: {message[:300]}")


def _code(error: Any) -> tuple[str, str]:
    if not isinstance(error, dict):
        return "error without code", repr(error)
    return str((error.get("extensions") or {}).get("code") or "error without code"), str(error.get("message"))


class Workload:
    def __init__(self, options: Options, world: World, *, base_url: str, ws_url: str, key: str):
        self.options = options
        self.world = world
        self.base_url, self.ws_url, self.key = base_url, ws_url, key
        self.phase = "warmup"
        self.stats = {phase: PhaseStats() for phase in PHASES}
        self.jobs: asyncio.Queue[str] = asyncio.Queue(maxsize=max(1, options.subscribers) * 4)
        self.edits = itertools.count(1)
        self.ops: dict[str, Callable[[httpx.AsyncClient, random.Random], Any]] = {
            "callsPage": self.calls_page, "call": self.call, "agents": self.agents, "chats": self.chats,
            "rerunJobs": self.rerun_jobs, "editDraft": self.edit_draft, "dryRun": self.dry_run, "rerun": self.rerun,
            "rerunAndCancel": self.rerun_and_cancel,
        }
        self.mix = [(name, weight) for name, weight in MIX if name != "chats" or world.chats]

    def current(self) -> PhaseStats | None:
        return self.stats.get(self.phase)

    def ending(self, started_in: str) -> PhaseStats | None:
        """Where what started in `started_in` and ends now counts: in that phase if it ends inside it (what is in
        flight when the last phase ends counts too), nowhere if it straddles two phases."""
        if self.phase == started_in or (started_in == PHASES[-1] and self.phase == "stop"):
            return self.stats.get(started_in)
        return None

    async def gql(self, client: httpx.AsyncClient, kind: str, query: str, variables: dict[str, Any] | None = None, *,
                  expected: frozenset[str] = frozenset(), check: Callable[[dict[str, Any]], str | None] | None = None) -> dict[str, Any] | None:
        """One request, counted by `ending`; an error of one that straddles two phases counts in the one it ended in.
        The data, or None on an error."""
        started_in = self.phase
        started = time.perf_counter()
        data, code, message = None, None, ""
        status = 0
        try:
            async with asyncio.timeout(self.options.timeout):
                response = await client.post("/graphql", content=orjson.dumps({"query": query, "variables": variables or {}}))
            status = response.status_code
            body = orjson.loads(response.content)
            if body.get("errors"):
                code, message = _code(body["errors"][0])
            elif status != 200:
                code, message = f"HTTP {status}", response.text[:300]
            else:
                data = body.get("data")
                problem = check(data) if check is not None and data is not None else None
                if problem:
                    code, message, data = "WRONG_ANSWER", problem, None
        except TimeoutError:
            code, message = "TIMEOUT", f"no answer in {self.options.timeout:.0f} s"
        except httpx.HTTPError as exc:
            code, message = f"TRANSPORT {type(exc).__name__}", str(exc)
        except orjson.JSONDecodeError:
            code, message = f"HTTP {status} not JSON", ""
        if started_in not in self.stats:
            return data  # warm-up
        stats = self.ending(started_in)
        if stats is not None:
            stats.latencies[kind].append(time.perf_counter() - started)
            stats.requests += 1
        else:
            self.stats[started_in].straddled += 1
        if code is not None:
            (stats or self.stats.get(self.phase) or self.stats[PHASES[-1]]).error(kind, code, message, expected)
        return data

    async def client(self, index: int) -> None:
        rnd = random.Random(self.options.seed * 1000 + index)
        names, weights = zip(*self.mix)
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json", "Accept": "application/json"}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.options.timeout, limits=limits) as client:
            await asyncio.sleep(rnd.uniform(0, 0.5))  # not all at once
            while self.phase != "stop":
                await self.ops[rnd.choices(names, weights)[0]](client, rnd)
                if self.options.think_ms > 0:
                    await asyncio.sleep(rnd.expovariate(1000.0 / self.options.think_ms))

    # -- operations

    async def calls_page(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        first = rnd.choice((20, 50, 50))
        voice = [a for a in self.world.agents if self.world.kind_of[a] == "CALL"]
        agent_filter = {"agentId": rnd.choice(voice)} if rnd.random() < 0.4 else None

        def check(data: dict[str, Any]) -> str | None:
            edges = data["calls"]["edges"]
            if len(edges) != first or any(e["node"]["agent"] is None for e in edges):
                return f"a page of {len(edges)} calls for first: {first}"
            return None

        await self.gql(client, "callsPage", CALLS_PAGE, {"first": first, "filter": agent_filter}, check=check)

    async def call(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        call_id = rnd.choice(self.world.call_ids)
        await self.gql(client, "call", CALL, {"id": call_id},
                       check=lambda d: None if d["call"] and d["call"]["id"] == call_id else f"call {call_id} not returned")

    async def agents(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        count = len(self.world.agents)
        await self.gql(client, "agents", AGENTS, check=lambda d: None if len(d["agents"]["nodes"]) >= count else "agents missing")

    async def chats(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        await self.gql(client, "chats", CHATS, check=lambda d: None if d["chats"]["nodes"] else "no chats")

    async def rerun_jobs(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        await self.gql(client, "rerunJobs", RERUN_JOBS)

    async def edit_draft(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        """Read the draft, change its summary prompt a moment later: CONFLICT when someone edited it meanwhile."""
        agent = rnd.choice(self.world.agents)
        data = await self.gql(client, "agentDraft", DRAFT, {"id": agent})
        if data is None:
            return
        revision = data["agent"]["draft"]["revision"]
        await asyncio.sleep(rnd.uniform(0, 0.2))
        prompt = f"{rnd.choice(SUMMARY_PROMPTS)} (edit {next(self.edits)})"
        await self.gql(client, "updateDraftPrompts", UPDATE,
                       {"agentId": agent, "input": {"summaryPrompt": prompt, "expectedRevision": revision}},
                       expected=frozenset({"CONFLICT"}),
                       check=lambda d: None if d["updateDraftPrompts"]["revision"] == revision + 1 else "revision did not move by one")

    async def dry_run(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        agent = rnd.choice(self.world.agents)
        since = (DATA_NOW - timedelta(days=rnd.randint(1, 30))).isoformat()
        await self.gql(client, "dryRun", RERUN, {"input": {"agentId": agent, "filter": {"startedAfter": since}, "dryRun": True}},
                       check=lambda d: None if d["rerunAnalysis"]["job"] is None else "a dry run created a job")

    async def _rerun(self, client: httpx.AsyncClient, rnd: random.Random, size: int) -> str | None:
        agent = rnd.choice(self.world.agents)
        ids = rnd.sample(self.world.finished[agent], k=min(size, len(self.world.finished[agent])))
        field_name = "callIds" if self.world.kind_of[agent] == "CALL" else "chatIds"
        data = await self.gql(client, "rerun", RERUN, {"input": {field_name: ids, "idempotencyKey": os.urandom(12).hex()}},
                              check=lambda d: None if d["rerunAnalysis"]["job"]["total"] == len(ids) else "wrong job total")
        if data is None:
            return None
        job_id = data["rerunAnalysis"]["job"]["id"]
        for _ in range(2):  # two watchers per job when the subscribers keep up
            with contextlib.suppress(asyncio.QueueFull):
                self.jobs.put_nowait(job_id)
        return job_id

    async def rerun(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        await self._rerun(client, rnd, rnd.randint(2, 5))

    async def rerun_and_cancel(self, client: httpx.AsyncClient, rnd: random.Random) -> None:
        """Cancel a rerun right after asking for it: CONFLICT when it has already finished."""
        job_id = await self._rerun(client, rnd, rnd.randint(5, 10))
        if job_id is not None:
            await self.gql(client, "cancelRerun", CANCEL, {"id": job_id}, expected=frozenset({"CONFLICT"}))

    # -- subscribers

    async def subscriber(self, index: int) -> None:
        while self.phase != "stop":
            stats = self.current()
            try:
                async with websockets.connect(self.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=self.options.timeout,
                                              max_size=2**22) as ws:
                    await ws.send(orjson.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {self.key}"}}).decode())
                    async with asyncio.timeout(self.options.timeout):
                        ack = orjson.loads(await ws.recv())
                    if ack.get("type") != "connection_ack":
                        raise RuntimeError(f"connection_init answered {ack}")
                    for number in itertools.count(1):
                        if self.phase == "stop":
                            return
                        try:
                            job_id = await asyncio.wait_for(self.jobs.get(), timeout=0.5)
                        except TimeoutError:
                            continue
                        await self._follow(ws, str(number), job_id)
            except (OSError, TimeoutError, RuntimeError, websockets.WebSocketException) as exc:
                if stats is not None and self.phase != "stop":
                    stats.error("subscription", f"WEBSOCKET {type(exc).__name__}", str(exc))
                await asyncio.sleep(0.5)

    async def _follow(self, ws: Any, op_id: str, job_id: str) -> None:
        """One subscription: the snapshot, the item events, the completion."""
        started_in = self.phase
        started = time.perf_counter()
        await ws.send(orjson.dumps({"id": op_id, "type": "subscribe", "payload": {"query": PROGRESS, "variables": {"id": job_id}}}).decode())
        if (stats := self.current()) is not None:
            stats.subscriptions += 1
        first = True
        try:
            async with asyncio.timeout(self.options.timeout):
                while True:
                    message = orjson.loads(await ws.recv())
                    if message.get("id") != op_id:
                        continue
                    kind, payload = message.get("type"), message.get("payload")
                    stats = self.ending(started_in)
                    if kind == "next" and isinstance(payload, dict) and payload.get("errors"):
                        if stats is not None:
                            stats.error("subscription", *_code(payload["errors"][0]))
                    elif kind == "next":
                        if stats is not None:
                            if first:
                                stats.latencies["subscribe→snapshot"].append(time.perf_counter() - started)
                            else:
                                stats.events += 1
                        first = False
                    elif kind == "complete":
                        if stats is not None:
                            stats.completed += 1
                            stats.latencies["subscription→complete"].append(time.perf_counter() - started)
                        return
                    elif kind == "error":
                        if stats is not None:
                            stats.error("subscription", *_code(payload[0] if isinstance(payload, list) and payload else payload))
                        return
        except TimeoutError:
            if (stats := self.ending(started_in)) is not None and self.phase != "stop":
                stats.error("subscription", "TIMEOUT", f"job {job_id} did not complete in {self.options.timeout:.0f} s")
            with contextlib.suppress(Exception):
                await ws.send(orjson.dumps({"id": op_id, "type": "complete"}).decode())


# ---- the run --------------------------------------------------------------------------------------


def _latency_json(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)

    def ms(p: float) -> float | None:
        v = percentile(ordered, p)
        return None if v != v else round(v * 1000, 1)

    return {"n": len(ordered), "p50": ms(50), "p95": ms(95), "p99": ms(99), "max": round(ordered[-1] * 1000, 1) if ordered else None}


def phase_json(stats: PhaseStats, seconds: float, memory: dict[str, float], cpu: dict[str, float]) -> dict[str, Any]:
    http = [v for kind, values in stats.latencies.items() if kind not in SUBSCRIPTION_KINDS for v in values]
    by_code: dict[str, dict[str, dict[str, int]]] = {"expected": defaultdict(dict), "unexpected": defaultdict(dict)}
    for group, counter in (("expected", stats.expected), ("unexpected", stats.unexpected)):
        for (kind, code), n in sorted(counter.items()):
            by_code[group][code][kind] = n
    return {
        "seconds": round(seconds, 2),
        "requests": stats.requests,
        "req_per_s": round(stats.requests / seconds, 1) if seconds else None,
        "latency_ms": {"all HTTP": _latency_json(http), **{kind: _latency_json(v) for kind, v in sorted(stats.latencies.items())}},
        "expected_errors": {code: dict(kinds) for code, kinds in by_code["expected"].items()},
        "unexpected_errors": {code: dict(kinds) for code, kinds in by_code["unexpected"].items()},
        "unexpected_total": sum(stats.unexpected.values()),
        "unexpected_samples": stats.samples,
        "subscriptions": {"started": stats.subscriptions, "completed": stats.completed, "item_events": stats.events},
        "requests_straddling_the_next_phase": stats.straddled,
        "server_memory_mib": memory,
        "cpu": cpu,
    }


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


def _cpu_seconds(stream: AbuseProcess | None) -> float:
    if stream is None or stream.process.pid is None:
        return 0.0
    with contextlib.suppress(psutil.Error):
        t = psutil.Process(stream.process.pid).cpu_times()
        return t.user + t.system
    return 0.0


async def wait_idle(pid: int, timeout: float = 60.0) -> float:
    """Wait until the server uses under a tenth of a core (the last reruns, work left over by abusive requests)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        before = server_cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if server_cpu_seconds(pid) - before < 0.05:
            break
    return time.perf_counter() - started


async def drive(options: Options, world: World, server: ServerProcess, key: str, abuse_key: str, database: str) -> dict[str, Any]:
    pid = server.process.pid
    ws_url = server.base_url.replace("http", "ws", 1) + "/graphql"
    workload = Workload(options, world, base_url=server.base_url, ws_url=ws_url, key=key)
    rss_now = [vm_kib(pid, "VmRSS")]
    exited: dict[str, Any] = {}
    guard_kib = options.max_server_rss_mib * 1024

    async def sample_memory() -> None:
        while True:
            if server.process.poll() is not None and "server_exited" not in exited:
                exited["server_exited"] = {"phase": workload.phase, "exit_code": server.process.returncode}
                print(f"the server exited ({server.process.returncode}) during phase {workload.phase}", flush=True)
            rss_now[0] = vm_kib(pid, "VmRSS")
            stats = workload.current()
            if stats is not None:
                stats.rss_peak_kib = max(stats.rss_peak_kib, rss_now[0])
            await asyncio.sleep(0.1)

    target = Target(server.base_url, ws_url, abuse_key)
    abuse_settings = {"concurrency": options.abusers, "heavy_at_once": options.heavy_at_once, "timeout": options.abuse_timeout,
                      "pause_s": options.abuse_pause_ms / 1000, "seed": options.seed, "kinds": kinds_named(options.abuse_kinds)}
    stream = AbuseProcess(target, abuse_settings, server_pid=pid, max_server_rss_kib=guard_kib) if options.abusers > 0 else None
    meter = CpuMeter(pid, database)
    sampler = asyncio.create_task(sample_memory())
    subscribers = [asyncio.create_task(workload.subscriber(i)) for i in range(options.subscribers)]
    clients = [asyncio.create_task(workload.client(i)) for i in range(options.clients)]
    marks: dict[str, dict[str, Any]] = {}
    tallies = {}
    try:
        print(f"warm-up {options.warmup:.0f} s: {options.clients} clients, {options.subscribers} subscribers", flush=True)
        await asyncio.sleep(options.warmup)
        for phase in PHASES:
            marks[phase] = {"cpu": meter.snapshot(), "rss": vm_kib(pid, "VmRSS"), "hwm": vm_kib(pid, "VmHWM"),
                            "abuser_cpu": _cpu_seconds(stream), "t": time.perf_counter()}
            workload.phase = phase
            if phase == "abuse" and stream is not None:
                stream.go()
            print(f"phase {phase}: {options.seconds:.0f} s", flush=True)
            await asyncio.sleep(options.seconds)
        end = {"cpu": meter.snapshot(), "rss": vm_kib(pid, "VmRSS"), "hwm": vm_kib(pid, "VmHWM"),
               "abuser_cpu": _cpu_seconds(stream), "t": time.perf_counter()}
        workload.phase = "stop"
        if stream is not None:
            tallies = await asyncio.to_thread(stream.finish, 30.0)
        # Requests in flight finish (their latency counts in the phase they started in); bounded by the request timeout.
        done, pending = await asyncio.wait(clients, timeout=options.timeout + 5)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        for task in subscribers:
            task.cancel()
        probe = None
        if options.probe:
            idle_after = await wait_idle(pid)
            print(f"probe: each abusive kind alone (server idle after {idle_after:.1f} s)", flush=True)
            prober = Abuser(target, over_memory_guard=lambda: rss_now[0] > guard_kib, **abuse_settings)
            probe = await prober.probe(lambda: server_cpu_seconds(pid), lambda: vm_kib(pid, "VmRSS"))
    finally:
        if stream is not None:
            stream.kill()
        for task in [*clients, *subscribers, sampler]:
            task.cancel()
        await asyncio.gather(*clients, *subscribers, sampler, return_exceptions=True)
    phases = {}
    for phase, following in zip(PHASES, [*[marks[p] for p in PHASES[1:]], end]):
        seconds = following["t"] - marks[phase]["t"]
        stats = workload.stats[phase]
        memory = {"rss_start": _mib(marks[phase]["rss"]), "rss_end": _mib(following["rss"]), "rss_peak_sampled": _mib(stats.rss_peak_kib),
                  "vmhwm_end": _mib(following["hwm"])}
        cpu = CpuMeter.delta(marks[phase]["cpu"], following["cpu"])
        # The abusive client is a process of this load test, not one of the machine's other processes.
        cpu["abusive_client_cpu_s"] = round(following["abuser_cpu"] - marks[phase]["abuser_cpu"], 3)
        cpu["other_processes_cpu_s"] = round(max(0.0, cpu["other_processes_cpu_s"] - cpu["abusive_client_cpu_s"]), 3)
        phases[phase] = phase_json(stats, seconds, memory, cpu)
    abuse = {kind.name: {"what": kind.what, "heavy": kind.heavy, **tallies[kind.name].to_json(percentile)}
             for kind in abuse_settings["kinds"] if kind.name in tallies}
    return {"phases": phases, "abuse": abuse, "abuse_probe": probe, **exited}


def import_chats(url: str, data_dir: Path, chats: int, seed: int) -> str:
    """The demo chat agent and `chats` of its chats, through `python -m graphql_api import` (initial analysis included)."""
    records = [r for r in iter_demo_records(seed, calls=0, chats=chats)
               if record_kind(r) != "AGENT" or parse_agent_version(r)["channel"] == "CHAT"]
    path = data_dir / "chats.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    done = cli("import", str(path), "--workspace", WORKSPACE, db_url=url, data_dir=data_dir, env={"LOG_LEVEL": "WARNING"}, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"import of the chats failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


async def prepare(options: Options, url: str, data_dir: Path) -> tuple[str, str, World, dict[str, Any]]:
    await migrate(url)
    key, workspace_id = await create_key(url)
    abuse_key, _ = await create_key(url)
    print(f"loading {options.calls:,} calls ...", flush=True)
    load = await load_data(url, workspace_id, options.calls, options.seed)
    if options.chats:
        started = time.perf_counter()
        load["chats_import"] = await asyncio.to_thread(import_chats, url, data_dir, options.chats, options.seed)
        load["chats_import_s"] = round(time.perf_counter() - started, 2)
    world = await read_world(url, workspace_id)
    print(f"loaded {load['calls']:,} calls over {load['agents_with_calls']} agents and {world.chats} chats in "
          f"{load['total_s'] + load.get('chats_import_s', 0):.1f} s; database {load['database_size']}", flush=True)
    return key, abuse_key, world, load


def server_source() -> dict[str, Any]:
    """Which server code ran: the package's checkout, its commit and whether server files had uncommitted changes."""
    root = Path(graphql_api.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "graphql_api", "sql")
    return {"path": str(root), "commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_server_files": None if changed is None else len(changed.splitlines())}


def run(options: Options | None = None, **overrides: Any) -> dict[str, Any]:
    """The whole load test on a fresh database; the report (also printed). `run(seconds=3, calls=2000, ...)` for a short slice."""
    options = dataclasses.replace(options or Options(), **overrides)
    kinds_named(options.abuse_kinds)  # an unknown name fails now, not after the load
    started = time.perf_counter()
    report: dict[str, Any] = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "load_average_before": [round(x, 2) for x in os.getloadavg()]},
        "python": sys.version.split()[0],
        "server_source": server_source(),
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL",
        "options": dataclasses.asdict(options),
    }
    data_dir = Path(tempfile.mkdtemp(prefix="gqlapi-bench-load-"))
    failed = True  # or the server exited early, or a client saw an unexpected error: its log is kept
    try:
        with bench_database() as url:
            key, abuse_key, world, load = asyncio.run(prepare(options, url, data_dir))
            report["load"] = load
            env = {"RATE_LIMIT_PER_S": f"{options.rate_limit_per_s:g}", "LOG_LEVEL": "WARNING"}
            server = ServerProcess(db_url=url, data_dir=data_dir, env=env)
            try:
                server.wait_ready(60)
                report["server"] = {"env": env, "rss_at_start_mib": _mib(vm_kib(server.process.pid, "VmRSS"))}
                print(f"server ready (pid {server.process.pid}, {report['server']['rss_at_start_mib']} MiB)", flush=True)
                report.update(asyncio.run(drive(options, world, server, key, abuse_key, urlsplit(url).path.lstrip("/"))))
            finally:
                report["server_exit_code"] = server.stop()
        failed = "server_exited" in report or any(p["unexpected_total"] for p in report["phases"].values())
    finally:
        if failed:
            for log in sorted(data_dir.glob("server-*.log")):
                print(f"server log {log} (kept), last lines:\n" + "\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    alone, abuse = report["phases"]["alone"]["latency_ms"], report["phases"]["abuse"]["latency_ms"]
    report["p99_ratio_abuse_vs_alone"] = {
        kind: round(abuse[kind]["p99"] / alone[kind]["p99"], 2)
        for kind in alone if kind in abuse and alone[kind]["p99"] and abuse[kind]["p99"] is not None
    }
    # What the abusive stream cost the server: its CPU in the abuse phase beyond what as many well-behaved requests
    # cost it alone (reruns and subscriptions scale with those requests). Unlike latency, not moved by other processes.
    per_request = report["phases"]["alone"]["cpu"]["server_cpu_s"] / max(1, report["phases"]["alone"]["requests"])
    abuse_phase = report["phases"]["abuse"]
    spent = abuse_phase["cpu"]["server_cpu_s"] - per_request * abuse_phase["requests"]
    report["server_cpu_ms_per_well_behaved_request"] = round(per_request * 1000, 2)
    report["abusive_stream_server_cpu_core_estimate"] = round(spent / abuse_phase["cpu"]["wall_s"], 2)
    report["total_runtime_s"] = round(time.perf_counter() - started, 1)
    print_report(report)
    return report


# ---- printing ---------------------------------------------------------------------------------------


def _errors_line(errors: dict[str, dict[str, int]]) -> str:
    if not errors:
        return "none"
    return "; ".join(f"{code} {sum(kinds.values())} (" + ", ".join(f"{k} {n}" for k, n in kinds.items()) + ")" for code, kinds in errors.items())


def print_report(report: dict[str, Any]) -> None:
    o = report["options"]
    for phase, title in zip(PHASES, ("well-behaved clients alone", "well-behaved clients + abusive stream")):
        p = report["phases"][phase]
        print(f"\n== {title}: {p['seconds']:.1f} s, {o['clients']} clients (think {o['think_ms']:.0f} ms), {o['subscribers']} subscribers")
        print(f"  throughput {p['req_per_s']} req/s ({p['requests']} requests); subscriptions {p['subscriptions']['started']} started, "
              f"{p['subscriptions']['completed']} completed, {p['subscriptions']['item_events']} item events"
              + (f"; {p['requests_straddling_the_next_phase']} requests ended in the next phase (not counted)"
                 if p["requests_straddling_the_next_phase"] else ""))
        print(f"  {'operation':<22}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  ms")
        for kind, lat in p["latency_ms"].items():
            print(f"  {kind:<22}{lat['n']:>7}" + "".join(f"{lat[q] if lat[q] is not None else '-':>9}" for q in ("p50", "p95", "p99", "max")))
        print(f"  expected errors:   {_errors_line(p['expected_errors'])}")
        print(f"  unexpected errors: {_errors_line(p['unexpected_errors'])}")
        for sample in p["unexpected_samples"]:
            print(f"    {sample}")
        m = p["server_memory_mib"]
        print(f"  server RSS {m['rss_start']} → {m['rss_end']} MiB, peak {m['rss_peak_sampled']} MiB (VmRSS every 0.1 s), "
              f"VmHWM at the phase's end {m['vmhwm_end']} MiB")
        print(f"  {describe_cpu(p['cpu'])}" + (f"; the abusive client {p['cpu']['abusive_client_cpu_s'] / p['cpu']['wall_s']:.2f} core"
                                                if p["cpu"]["abusive_client_cpu_s"] else ""))
    print(f"\n== abusive stream ({o['abusers']} in flight, at most {o['heavy_at_once']} heavy, timeout {o['abuse_timeout']:.0f} s, "
          f"no heavy one above {o['max_server_rss_mib']} MiB server RSS)")
    for name, t in report["abuse"].items():
        lat = t["latency_ms"]
        answers = ", ".join(f"{label} ×{n}" for label, n in t["answers"].items()) or "-"
        skipped = f", {t['skipped_memory_guard']} skipped (memory guard)" if t["skipped_memory_guard"] else ""
        print(f"  {name:<18} sent {t['sent']:>4}{skipped}; p50 {lat['p50']} ms, max {lat['max']} ms; {answers}")
    if report.get("abuse_probe"):
        print("\n== probe: each abusive kind alone on the idle server (per request: latency, server CPU; RSS growth over the kind)")
        for name, t in report["abuse_probe"].items():
            answers = ", ".join(f"{label} ×{n}" for label, n in t["answers"].items()) or "not sent (memory guard)"
            print(f"  {name:<18} {t['latency_ms_mean']} ms, CPU {t['server_cpu_ms_per_request']} ms, "
                  f"RSS +{t['server_rss_growth_mib']} MiB; {answers}")
    if "server_exited" in report:
        e = report["server_exited"]
        print(f"\n!! the server process exited during phase {e['phase']} (exit code {e['exit_code']}); its log was kept")
    print(f"\n== server CPU: {report['server_cpu_ms_per_well_behaved_request']} ms per well-behaved request alone; the abusive "
          f"stream took about {report['abusive_stream_server_cpu_core_estimate']} core of it in its phase")
    ratio = report["p99_ratio_abuse_vs_alone"]
    print("\n== p99 with the abusive stream / without: " + f"{ratio.get('all HTTP')}x overall; "
          + ", ".join(f"{k} {v}x" for k, v in ratio.items() if k != "all HTTP"))
    print(f"total runtime {report['total_runtime_s']:.0f} s")


def main() -> int:
    options = Options.from_env()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        report = run(options)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"load-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"results: {out}")
    unexpected = sum(p["unexpected_total"] for p in report["phases"].values())
    if unexpected:
        print(f"{unexpected} unexpected errors in the well-behaved clients", file=sys.stderr)
    return 1 if unexpected or "server_exited" in report else 0


if __name__ == "__main__":
    sys.exit(main())
