"""Rerun benchmark: throughput against a Gemini-compatible server with a fixed delay, and progress fan-out.

    .venv/bin/python -m bench.reruns [--conversations 10000] [--delay 0.5] [--concurrency 50]
                                     [--subscribers 1000] [--sub-items 200]

Part 1 reruns N conversations through one server process whose in-process worker runs C analyses at
once against a Gemini test server that answers after L seconds: the physical limit is C/L per second,
and the figure that matters is the achieved fraction of it. Part 2 subscribes S WebSocket clients to
one job and measures the delay from each item's commit to its event reaching every subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import websockets

from graphql_api.db import EmbeddedPostgres, migrate, with_database
from graphql_api.testing import GeminiTestServer
from graphql_api.testing.processes import ServerProcess, cli

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FINAL = {"SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED"}

LOAD_SQL = """
WITH ws AS (SELECT id FROM workspaces WHERE name = 'bench')
INSERT INTO agents (workspace_id, agent_id, name, channel) SELECT id, 'agent_bench', 'Bench Receptionist', 'VOICE' FROM ws;
INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, published_at, summary_prompt, data_fields, model)
SELECT w.id, 'agent_bench', v.version, v.published, CASE WHEN v.published THEN now() END,
       'Summarize the call in one sentence.',
       '[{"name": "visit_type", "type": "ENUM", "description": "Kind of visit", "examples": [], "choices": ["cleaning", "checkup", "emergency"], "required": true},
         {"name": "party_size", "type": "NUMBER", "description": "People booked", "examples": [], "choices": null, "required": false}]'::jsonb,
       'gemini-2.5-flash-lite'
FROM workspaces w, (VALUES (0, true), (1, false)) AS v(version, published) WHERE w.name = 'bench';
INSERT INTO conversations (workspace_id, conversation_id, kind, agent_id, agent_version, conversation_type, status,
                           direction, started_at, ended_at, duration_ms, transcript, utterances, sort_at)
SELECT w.id, 'call_' || lpad(i::text, 8, '0'), 'CALL', 'agent_bench', 0, 'phone_call', 'ended', 'inbound',
       now() - make_interval(mins => i), now() - make_interval(mins => i) + interval '90 seconds', 90000,
       'Agent: Riverside Dental, how can I help?' || E'\\n' ||
       'User: Hi, I would like to book a ' || (ARRAY['cleaning', 'checkup', 'emergency visit'])[1 + i % 3] ||
       ' for ' || (1 + i % 4) || ' people next ' || (ARRAY['Monday', 'Tuesday', 'Friday'])[1 + i % 3] || '.' || E'\\n' ||
       'Agent: I have 10 AM or 2 PM available.' || E'\\n' || 'User: 2 PM works, thanks.' || E'\\n' ||
       'Agent: You are booked. See you then.',
       '[]'::jsonb, now() - make_interval(mins => i)
FROM workspaces w, generate_series(1, $1::int) AS i WHERE w.name = 'bench';
"""

RERUN = "mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id total } estimate { costUsd } } }"
JOB = "query($id: ID!) { rerunJob(id: $id) { status total succeeded failed startedAt finishedAt } }"
SUBSCRIPTION = """subscription($id: ID!) { rerunProgress(jobId: $id) {
  job { status succeeded failed total } item { conversationId status finishedAt } } }"""


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def server_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def function_ms_per_call(db_url: str, function: str) -> float:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        row = await conn.fetchrow("SELECT calls, self_time FROM pg_stat_user_functions WHERE funcname = $1", function)
        # self_time excludes the nested record_analysis_result call; total_time includes it.
        total = await conn.fetchval("SELECT total_time FROM pg_stat_user_functions WHERE funcname = $1", function)
    finally:
        await conn.close()
    return (total / row["calls"]) if row and row["calls"] else float("nan")


def metrics_of(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


@contextlib.contextmanager
def database(base_url: str | None):
    """A fresh database on DATABASE_URL's server or an embedded one; dropped afterwards."""
    embedded = None
    if base_url is None:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="gqlapi-bench-pg-")), delete_on_stop=True)
        base_url = embedded.start()
    name = f"gqlapi_bench_reruns_{os.getpid()}"
    admin_url = with_database(base_url, "postgres")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn=admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    # Time spent inside PL/pgSQL functions (finish_rerun_item) is what the database does per item.
    asyncio.run(admin(f"ALTER DATABASE \"{name}\" SET track_functions = 'pl'"))
    try:
        yield with_database(base_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if embedded is not None:
            embedded.stop()


class Api:
    def __init__(self, server: ServerProcess, key: str):
        self.server = server
        self.client = httpx.AsyncClient(base_url=server.base_url, timeout=120, headers={"Authorization": f"Bearer {key}"})

    async def gql(self, query: str, variables: dict | None = None) -> dict:
        body = (await self.client.post("/graphql", json={"query": query, "variables": variables or {}})).json()
        if body.get("errors"):
            raise RuntimeError(body["errors"])
        return body["data"]

    async def metrics(self) -> dict[str, float]:
        return metrics_of((await self.client.get("/metrics")).text)

    async def wait_final(self, job_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = (await self.gql(JOB, {"id": job_id}))["rerunJob"]
            if job["status"] in FINAL:
                return job
            await asyncio.sleep(0.25)
        raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f}s")


async def throughput(args: argparse.Namespace, db_url: str, key: str, data_dir: Path) -> dict[str, Any]:
    limit = args.concurrency / args.delay
    where = f"{args.worker_processes} worker processes" if args.worker_processes else "the server's in-process worker"
    print(f"\n== throughput: {args.conversations} conversations, L={args.delay}s, C={args.concurrency} ({where}): "
          f"limit C/L = {limit:.1f}/s")
    with GeminiTestServer(delay_s=args.delay, record=False) as gemini, contextlib.ExitStack() as stack:
        env = {
            "GEMINI_API_KEY": "bench", "GEMINI_BASE_URL": gemini.base_url, "ANALYSIS_CONCURRENCY": str(args.concurrency),
            "LOG_LEVEL": "WARNING",
        }
        workers = []
        if args.worker_processes:
            env["RUN_WORKERS"] = "0"
            share = {**env, "ANALYSIS_CONCURRENCY": str(args.concurrency // args.worker_processes), "LOG_LEVEL": "INFO"}
            for _ in range(args.worker_processes):
                worker = ServerProcess(db_url=db_url, data_dir=data_dir, env=share, command="worker").wait_ready()
                stack.callback(worker.stop)
                workers.append(worker)
        with ServerProcess(db_url=db_url, data_dir=data_dir, env=env) as server:
            api = Api(server, key)
            pid = server.process.pid
            rss_start = vm_kib(pid, "VmRSS")
            before = await api.metrics()
            created_at = time.perf_counter()
            payload = (await api.gql(RERUN, {"input": {"agentId": "agent_bench"}}))["rerunAnalysis"]
            create_s = time.perf_counter() - created_at
            job_id, total = payload["job"]["id"], payload["job"]["total"]
            print(f"job {job_id}: {total} items created in {create_s * 1000:.0f} ms (estimate ${payload['estimate']['costUsd']})")
            last_print = time.monotonic()
            deadline = time.monotonic() + args.conversations / limit * 4 + 60
            while True:
                job = (await api.gql(JOB, {"id": job_id}))["rerunJob"]
                if job["status"] in FINAL:
                    break
                if time.monotonic() - last_print > 5:
                    print(f"  progress: {job['succeeded'] + job['failed']}/{total}", flush=True)
                    last_print = time.monotonic()
                if time.monotonic() > deadline:
                    raise TimeoutError("throughput job did not finish")
                await asyncio.sleep(0.25)
            after = await api.metrics()
            # With worker processes the work happens there: their memory and CPU are what count.
            pids = [w.process.pid for w in workers] or [pid]
            peak_kib = max(vm_kib(p, "VmHWM") for p in pids)
            cpu_s = sum(server_cpu_seconds(p) for p in pids)
            await api.client.aclose()
    started = datetime.fromisoformat(job["startedAt"])
    finished = datetime.fromisoformat(job["finishedAt"])
    seconds = (finished - started).total_seconds()
    rate = total / seconds
    items = after.get("rerun_items_processed_total", 0) - before.get("rerun_items_processed_total", 0)
    # Worker processes serve no /metrics: the worker-side wall time is known only for the in-process worker.
    db_ms = (after.get("rerun_db_seconds_total", 0) - before.get("rerun_db_seconds_total", 0)) / items * 1000 if items else float("nan")
    function_ms = await function_ms_per_call(db_url, "finish_rerun_item")
    figures = {
        "conversations": total,
        "delay_s": args.delay,
        "concurrency": args.concurrency,
        "status": job["status"],
        "failed": job["failed"],
        "job_create_ms": round(create_s * 1000, 1),
        "run_seconds": round(seconds, 2),
        "rate_per_s": round(rate, 1),
        "limit_per_s": round(limit, 1),
        "fraction_of_limit": round(rate / limit, 3),
        "db_wall_ms_per_item": round(db_ms, 3),
        "db_server_ms_per_commit": round(function_ms, 3),
        "server_cpu_seconds": round(cpu_s, 1),
        "worker_processes": args.worker_processes,
        "sql_statements_per_item": round((after["sql_statements_total"] - before["sql_statements_total"]) / items, 2) if items else None,
        "server_rss_start_mib": round(rss_start / 1024, 1),
        "server_peak_rss_mib": round(peak_kib / 1024, 1),
    }
    print(
        f"status {job['status']} in {seconds:.1f}s: {rate:.1f}/s = {rate / limit:.3f} of the limit {limit:.1f}/s\n"
        f"database time per item: {function_ms:.2f} ms in PostgreSQL for the commit (finish_rerun_item), "
        f"{db_ms:.2f} ms wall as the worker saw claim+commit ({figures['sql_statements_per_item']} statements per item)\n"
        f"worker CPU {cpu_s:.1f}s over the run ({cpu_s / seconds:.2f} cores), "
        f"job creation {create_s * 1000:.0f} ms for {total} items, worker peak RSS {peak_kib / 1024:.0f} MiB "
        f"(at start {rss_start / 1024:.0f} MiB)"
    )
    return figures


async def subscriber(url: str, key: str, job_id: str, ready: asyncio.Event, counter: list[int], delays: list[float], done: list[int]) -> None:
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"], max_size=2**22, open_timeout=60) as ws:
        await ws.send(orjson.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}).decode())
        assert orjson.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(orjson.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": {"id": job_id}}}).decode())
        first = True
        async for raw in ws:
            received = time.time()
            message = orjson.loads(raw)
            if message["type"] == "complete":
                done[0] += 1
                return
            if message["type"] != "next":
                raise RuntimeError(message)
            event = message["payload"]["data"]["rerunProgress"]
            if first:
                first = False
                counter[0] += 1
                if counter[0] == counter[1]:
                    ready.set()
                continue
            item = event["item"]
            if item is not None and item["finishedAt"]:
                delays.append(received - datetime.fromisoformat(item["finishedAt"]).timestamp())


async def fanout(args: argparse.Namespace, db_url: str, key: str, data_dir: Path) -> dict[str, Any]:
    rate = args.sub_concurrency / args.sub_delay
    print(f"\n== fan-out: {args.subscribers} subscribers on one job of {args.sub_items} items finishing at ~{rate:.0f}/s "
          f"({args.subscribers * rate:.0f} events/s to deliver)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it: the server needs a socket each
    with GeminiTestServer(delay_s=args.sub_delay, record=False) as gemini:
        env = {"GEMINI_API_KEY": "bench", "GEMINI_BASE_URL": gemini.base_url, "LOG_LEVEL": "WARNING"}
        # One key for every subscriber: the per-key socket cap (WS_MAX_SOCKETS_PER_KEY) is raised to fit them.
        server_env = {**env, "RUN_WORKERS": "0", "WS_MAX_SOCKETS_PER_KEY": str(args.subscribers + 10),
                      "WS_MAX_SOCKETS": str(args.subscribers + 100)}
        with ServerProcess(db_url=db_url, data_dir=data_dir, env=server_env) as server:
            api = Api(server, key)
            ids = [f"call_{i:08d}" for i in range(1, args.sub_items + 1)]
            job_id = (await api.gql(RERUN, {"input": {"callIds": ids}}))["rerunAnalysis"]["job"]["id"]
            ready, counter, delays, done = asyncio.Event(), [0, args.subscribers], [], [0]
            url = server.base_url.replace("http", "ws") + "/graphql"
            connect_started = time.perf_counter()
            tasks = []
            for i in range(args.subscribers):
                tasks.append(asyncio.create_task(subscriber(url, key, job_id, ready, counter, delays, done)))
                if i % 50 == 49:
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(ready.wait(), timeout=120)
            print(f"{args.subscribers} subscribers have their snapshot after {time.perf_counter() - connect_started:.1f}s; starting a worker")
            worker_env = {**env, "ANALYSIS_CONCURRENCY": str(args.sub_concurrency), "LOG_LEVEL": "INFO"}  # readiness shows in its log
            worker = ServerProcess(db_url=db_url, data_dir=data_dir, env=worker_env, command="worker")
            worker.wait_ready()
            run_started = time.perf_counter()
            cpu_started = server_cpu_seconds(server.process.pid)
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=600)
            run_s = time.perf_counter() - run_started
            cpu_s = server_cpu_seconds(server.process.pid) - cpu_started
            worker.stop()
            errors = [r for r in results if isinstance(r, Exception)]
            peak_kib = vm_kib(server.process.pid, "VmHWM")
            await api.client.aclose()
    expected = args.subscribers * args.sub_items
    figures = {
        "item_rate_per_s": rate,
        "subscribers": args.subscribers,
        "items": args.sub_items,
        "events_expected": expected,
        "events_received": len(delays),
        "streams_completed": done[0],
        "errors": len(errors),
        "run_seconds": round(run_s, 2),
        "delay_p50_ms": round(percentile(delays, 50) * 1000, 1),
        "delay_p99_ms": round(percentile(delays, 99) * 1000, 1),
        "delay_max_ms": round(max(delays) * 1000, 1) if delays else None,
        "server_peak_rss_mib": round(peak_kib / 1024, 1),
        "server_cpu_seconds": round(cpu_s, 2),
        "server_cpu_us_per_event": round(cpu_s / len(delays) * 1e6, 1) if delays else None,
    }
    print(
        f"{len(delays)}/{expected} item events, {done[0]}/{args.subscribers} streams completed, {len(errors)} errors, "
        f"in {run_s:.1f}s; commit-to-subscriber delay p50 {figures['delay_p50_ms']} ms, p99 {figures['delay_p99_ms']} ms, "
        f"max {figures['delay_max_ms']} ms; server peak RSS {peak_kib / 1024:.0f} MiB, "
        f"server CPU {cpu_s:.1f}s ({cpu_s / run_s:.2f} cores, {figures['server_cpu_us_per_event']} us per event delivered)"
    )
    if errors:
        print(f"first error: {errors[0]!r}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--delay", type=float, default=0.5, help="Gemini test server answer delay L, seconds")
    parser.add_argument("--concurrency", type=int, default=50, help="ANALYSIS_CONCURRENCY C of the server's worker")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--sub-items", type=int, default=200)
    parser.add_argument("--sub-concurrency", type=int, default=2, help="worker concurrency in the fan-out part")
    parser.add_argument("--sub-delay", type=float, default=0.2, help="Gemini delay in the fan-out part: items/s = concurrency/delay")
    parser.add_argument("--worker-processes", type=int, default=0,
                        help="run the throughput part on N `worker` processes sharing C, instead of the server's own worker")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-fanout", action="store_true")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="gqlapi-bench-data-"))
    with database(os.environ.get("DATABASE_URL")) as db_url:
        asyncio.run(migrate(db_url))
        key = cli("create-api-key", "--workspace", "bench", db_url=db_url, data_dir=data_dir).stdout.strip().splitlines()[-1]
        load_started = time.perf_counter()

        async def load() -> None:
            conn = await asyncpg.connect(dsn=db_url)
            try:
                for statement in LOAD_SQL.split(";\n"):
                    if statement.strip():
                        await conn.execute(statement, *([max(args.conversations, args.sub_items)] if "$1" in statement else []))
                await conn.execute("ANALYZE")
            finally:
                await conn.close()

        asyncio.run(load())
        print(f"loaded {max(args.conversations, args.sub_items)} calls in {time.perf_counter() - load_started:.1f}s")
        report: dict[str, Any] = {"when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count()}
        if not args.skip_throughput:
            report["throughput"] = asyncio.run(throughput(args, db_url, key, data_dir))
        if not args.skip_fanout:
            report["fanout"] = asyncio.run(fanout(args, db_url, key, data_dir))
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"reruns-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")
    if "throughput" in report:
        t = report["throughput"]
        print(f"summary: {t['rate_per_s']}/s of {t['limit_per_s']}/s = {t['fraction_of_limit']:.2f} of the physical limit; "
              f"{t['db_server_ms_per_commit']} ms database time per item (commit), {t['db_wall_ms_per_item']} ms wall")
    if "fanout" in report:
        f = report["fanout"]
        print(f"summary: {f['subscribers']} subscribers, commit-to-event p50 {f['delay_p50_ms']} ms / p99 {f['delay_p99_ms']} ms")


if __name__ == "__main__":
    main()
