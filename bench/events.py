"""analysis.completed webhooks under a rerun: does sending one event per analysis slow the rerun, and how fast do the
events drain?

    .venv/bin/python -m bench.events [--conversations 10000] [--analyzer offline|gemini] [--delay 0.5]
                                     [--concurrency 50] [--format API|RETELL]

One server process (`serve`, its in-process worker and delivery loop) reruns N calls, in rounds: once with the
endpoint disabled, once with it taking analysis.completed (a receiver on loopback, in a process of its own, that
checks every signature with the standardwebhooks library and answers 200). Alternating the two cases keeps a machine
that gets busier or quieter from favouring one; the medians are compared. Each run reports the rerun's items/s (job
started -> finished), the database time of a commit (finish_rerun_item, lock waits included) and of the trigger that
writes the events, and the server's CPU. The endpoint's runs also report when the N events reached the receiver
(commit -> receipt delay, and how long after the job's end the last one came). Last, the same N deliveries are made
due again and a fresh server drains them with nothing else to do: the delivery loop's own throughput.

The offline analyzer (the default) is CPU-bound in the server process, the harshest case for the events: every
microsecond spent sending them is taken from the rerun. With --analyzer gemini the rerun waits on a Gemini test
server answering after --delay seconds, --concurrency analyses at a time (the shape of production).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.reruns import LOAD_SQL, RESULTS_DIR, Api, database, percentile, server_cpu_seconds
from graphql_api.db import migrate
from graphql_api.testing import GeminiTestServer
from graphql_api.testing.processes import ServerProcess, cli

RERUN = "mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id total } } }"
CREATE = """mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  secret endpoint { id eventTypes payloadFormat } } }"""
DISABLE = "mutation($id: ID!) { disableWebhookEndpoint(id: $id) { id enabled } }"


# ---- the receiver: a process of its own, so its work is not the server's nor the benchmark's ----------------------

def _receiver_main(conn: Any, port_out: Any) -> None:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    received: list[tuple[float, str, str | None]] = []  # (time, webhook-id, the analysis's created_at)
    state = {"secret": None, "bad": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                at = time.time()
                try:
                    Webhook(state["secret"]).verify(body, headers)
                except (WebhookVerificationError, TypeError, ValueError):
                    state["bad"] += 1
                event = orjson.loads(body)
                created = (event.get("data", {}).get("analysis", {}).get("created_at")
                           or event.get("analysis_run", {}).get("created_at"))
                received.append((at, headers.get("webhook-id", ""), created))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_out.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        while True:
            command, arg = await loop.run_in_executor(None, conn.recv)
            if command == "secret":
                state["secret"] = arg
                conn.send(True)
            elif command == "count":
                conn.send((len(received), len({r[1] for r in received}), state["bad"]))
            elif command == "take":
                conn.send(list(received))
                received.clear()
            elif command == "stop":
                conn.send(True)
                return

    asyncio.run(main())


class Receiver:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        port_in, port_out = ctx.Pipe()
        self.process = ctx.Process(target=_receiver_main, args=(child, port_out), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{port_in.recv()}/hooks"

    def ask(self, command: str, arg: Any = None) -> Any:
        self.conn.send((command, arg))
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask("stop")
        self.process.join(5)


# ---- one rerun ------------------------------------------------------------------------------------------------------

async def _stats(db_url: str) -> dict[str, tuple[int, float]]:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        rows = await conn.fetch("SELECT funcname, sum(calls)::bigint AS calls, sum(total_time) AS total_time FROM pg_stat_user_functions "
                                "WHERE funcname IN ('finish_rerun_item', 'analysis_results_completed') GROUP BY funcname")
        return {r["funcname"]: (r["calls"], r["total_time"]) for r in rows}
    finally:
        await conn.close()


def _per_call_ms(before: dict, after: dict, name: str) -> float:
    calls = after.get(name, (0, 0.0))[0] - before.get(name, (0, 0.0))[0]
    spent = after.get(name, (0, 0.0))[1] - before.get(name, (0, 0.0))[1]
    return spent / calls if calls else float("nan")


async def delivered_over_time(db_url: str, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    """(time, analysis.completed deliveries made) twice a second, until stopped."""
    conn = await asyncpg.connect(dsn=db_url)
    try:
        while not stop.is_set():
            samples.append((time.time(), await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'DELIVERED' AND event_type = 'analysis.completed'")))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await conn.close()


async def rerun(api: Api, server: ServerProcess, db_url: str, label: str) -> dict[str, Any]:
    await asyncio.sleep(2)  # the machine settles after the previous step
    load_before = os.getloadavg()[0]
    stats_before = await _stats(db_url)
    cpu_before = server_cpu_seconds(server.process.pid)
    job_id = (await api.gql(RERUN, {"input": {"agentId": "agent_bench"}}))["rerunAnalysis"]["job"]["id"]
    conn = await asyncpg.connect(dsn=db_url)
    try:
        while True:
            # Read from the database, not through the server: the benchmark asks nothing of the process it measures.
            job = await conn.fetchrow("SELECT status, total, failed, started_at, finished_at FROM rerun_jobs WHERE job_id = $1",
                                      job_id)
            if job["status"] in ("SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED"):
                break
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    finished_seen = time.time()
    cpu_s = server_cpu_seconds(server.process.pid) - cpu_before
    stats_after = await _stats(db_url)
    seconds = (job["finished_at"] - job["started_at"]).total_seconds()
    figures = {
        "label": label,
        "job_id": job_id,
        "status": job["status"],
        "items": job["total"],
        "failed": job["failed"],
        "run_seconds": round(seconds, 2),
        "items_per_s": round(job["total"] / seconds, 1),
        "commit_ms": round(_per_call_ms(stats_before, stats_after, "finish_rerun_item"), 3),
        "events_trigger_ms": round(_per_call_ms(stats_before, stats_after, "analysis_results_completed"), 4),
        "server_cpu_s": round(cpu_s, 1),
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
        "finished_at": job["finished_at"].timestamp(),
        "finished_seen": finished_seen,
    }
    print(f"{label}: {job['total']} items in {seconds:.1f}s = {figures['items_per_s']}/s ({job['status']}, "
          f"{job['failed']} failed); commit {figures['commit_ms']} ms in PostgreSQL, of which the events trigger "
          f"{figures['events_trigger_ms']} ms; server CPU {cpu_s:.1f}s; load {load_before:.2f} -> {figures['load_1m_after']:.2f}",
          flush=True)
    return figures


async def wait_delivered(receiver: Receiver, db_url: str, expected: int, timeout: float) -> float:
    """Seconds until the receiver has `expected` distinct events and the database shows none pending."""
    started = time.time()
    conn = await asyncpg.connect(dsn=db_url)
    try:
        while time.time() - started < timeout:
            _, distinct, _ = receiver.ask("count")
            if distinct >= expected:
                pending = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING'")
                if pending == 0:
                    return time.time() - started
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise TimeoutError(f"deliveries not drained in {timeout:.0f}s: {receiver.ask('count')}")


def delays_of(received: list[tuple[float, str, str | None]]) -> list[float]:
    return [at - datetime.fromisoformat(created).timestamp() for at, _, created in received if created]


async def drain_backlog(receiver: Receiver, db_url: str, data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """The pending deliveries, all due; a server started now, with nothing else to do, sends them."""
    conn = await asyncpg.connect(dsn=db_url)
    try:
        n = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING'")
    finally:
        await conn.close()
    receiver.ask("take")
    with ServerProcess(db_url=db_url, data_dir=data_dir, env=env) as server:
        cpu_before = server_cpu_seconds(server.process.pid)
        load_before = os.getloadavg()[0]
        drain_s = await wait_delivered(receiver, db_url, n, timeout=900)
        cpu_s = server_cpu_seconds(server.process.pid) - cpu_before
    received = receiver.ask("take")
    figures = {
        "deliveries": n,
        "drain_seconds": round(drain_s, 2),
        "per_s": round(n / drain_s, 1),
        "server_cpu_s": round(cpu_s, 1),
        "server_cpu_us_per_delivery": round(cpu_s / n * 1e6, 1),
        "received": len(received),
        "load_1m_before": round(load_before, 2),
    }
    print(f"drain: {n} due deliveries sent in {drain_s:.1f}s = {n / drain_s:.0f}/s by a server doing nothing else "
          f"(server CPU {cpu_s:.1f}s, {figures['server_cpu_us_per_delivery']} us per delivery, bodies built as they go)",
          flush=True)
    return figures


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def runs(args: argparse.Namespace, db_url: str, key: str, data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    receiver = Receiver()
    report: dict[str, Any] = {"without": [], "with": []}
    try:
        with ServerProcess(db_url=db_url, data_dir=data_dir, env=env) as server:
            api = Api(server, key)
            await rerun(api, server, db_url, "warm-up (every call gets a current result)")
            conn = await asyncpg.connect(dsn=db_url)
            try:
                await conn.execute("ANALYZE analysis_results, charges, rerun_jobs, rerun_items")
            finally:
                await conn.close()
            created = (await api.gql(CREATE, {"input": {"url": receiver.url, "eventTypes": ["ANALYSIS_COMPLETED"],
                                                         "payloadFormat": args.format}}))["createWebhookEndpoint"]
            receiver.ask("secret", created["secret"])
            endpoint_id = created["endpoint"]["id"]
            conn = await asyncpg.connect(dsn=db_url)
            try:
                # Rounds alternate the two cases, so that a machine getting busier or quieter affects both alike.
                for round_ in range(1, args.rounds + 1):
                    await conn.execute("UPDATE webhook_endpoints SET enabled = false, disabled_at = now() WHERE id = $1",
                                       endpoint_id)
                    report["without"].append(await rerun(api, server, db_url, f"round {round_}, no endpoint"))
                    await conn.execute("UPDATE webhook_endpoints SET enabled = true, disabled_at = NULL WHERE id = $1",
                                       endpoint_id)
                    samples: list[tuple[float, int]] = []
                    stop = asyncio.Event()
                    sampler = asyncio.create_task(delivered_over_time(db_url, samples, stop))
                    figures = await rerun(api, server, db_url, f"round {round_}, endpoint taking analysis.completed "
                                                               f"({args.format})")
                    await wait_delivered(receiver, db_url, figures["items"], timeout=900)
                    stop.set()
                    await sampler
                    before_end = max((n for at, n in samples if at <= figures["finished_at"]), default=0)
                    figures["delivered_by_job_end"] = before_end - (samples[0][1] if samples else 0)
                    figures["last_attempt_after_job_end_s"] = round(await conn.fetchval(
                        "SELECT extract(epoch FROM max(d.last_attempt_at) - j.finished_at)::float8 FROM webhook_deliveries d "
                        "JOIN rerun_jobs j ON j.job_id = d.job_id WHERE d.job_id = $1 GROUP BY j.finished_at",
                        figures["job_id"]), 2)
                    received = receiver.ask("take")
                    _, _, bad = receiver.ask("count")
                    delays = delays_of(received)
                    figures.update({
                        "events_received": len(received),
                        "events_distinct": len({r[1] for r in received}),
                        "signatures_failed_so_far": bad,
                        "last_event_after_job_end_s": round(max(0.0, max(a for a, _, _ in received) - figures["finished_at"]), 2),
                        "commit_to_receipt_p50_ms": round(percentile(delays, 50) * 1000, 1),
                        "commit_to_receipt_p99_ms": round(percentile(delays, 99) * 1000, 1),
                        "commit_to_receipt_max_ms": round(max(delays) * 1000, 1),
                    })
                    print(f"  {len(received)} events received ({figures['events_distinct']} distinct, {bad} bad signatures "
                          f"so far), {figures['delivered_by_job_end']} of them by the job's end, the last "
                          f"{figures['last_event_after_job_end_s']}s after it (last sent "
                          f"{figures['last_attempt_after_job_end_s']}s after it); commit -> "
                          f"receipt p50 {figures['commit_to_receipt_p50_ms']} ms, p99 {figures['commit_to_receipt_p99_ms']} "
                          f"ms", flush=True)
                    report["with"].append(figures)
            finally:
                await conn.close()
            await api.client.aclose()
        without = median([r["items_per_s"] for r in report["without"]])
        with_ = median([r["items_per_s"] for r in report["with"]])
        report["median_items_per_s"] = {"without": without, "with": with_}
        report["slowdown"] = round(1 - with_ / without, 3)
        print(f"median items/s without the endpoint {without}, with it {with_}: {report['slowdown'] * 100:+.1f}% "
              f"slower (runs: {[r['items_per_s'] for r in report['without']]} and {[r['items_per_s'] for r in report['with']]})",
              flush=True)
    finally:
        receiver.close()
    return report


async def backlog(db_url: str, data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """N analysis.completed deliveries written as N results commit (SQL alone: an endpoint and a result per call, no
    server running), then drained at once: the delivery loop's own throughput. Works with any version of the code that
    has migration 014, to compare delivery loops."""
    receiver = Receiver()
    try:
        conn = await asyncpg.connect(dsn=db_url)
        try:
            secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            receiver.ask("secret", secret)
            await conn.execute(
                "INSERT INTO webhook_endpoints (id, workspace_id, url, event_types, secret) "
                "SELECT 'whe_00000000000000000bec', id, $1, '{analysis.completed}', $2 FROM workspaces WHERE name = 'bench'",
                receiver.url, secret)
            await conn.execute(
                "SELECT record_analysis_result(c.workspace_id, c.conversation_id, 'INITIAL', c.agent_id, c.agent_version, "
                "'offline', 'A booking.', true, 'POSITIVE', false, '{}'::jsonb, 100, 20, 0, true, 'initial', NULL) "
                "FROM conversations c")
            await conn.execute("VACUUM ANALYZE webhook_deliveries")
        finally:
            await conn.close()
        return await drain_backlog(receiver, db_url, data_dir, env)
    finally:
        receiver.close()


async def load(db_url: str, conversations: int) -> None:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        for statement in LOAD_SQL.split(";\n"):
            if statement.strip():
                await conn.execute(statement, *([conversations] if "$1" in statement else []))
        # Not the tables still empty: statistics saying "empty" would plan lookups in them as scans.
        await conn.execute("ANALYZE workspaces, agents, agent_versions, conversations")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--analyzer", choices=("offline", "gemini"), default="offline")
    parser.add_argument("--delay", type=float, default=0.5, help="Gemini test server answer delay, seconds")
    parser.add_argument("--concurrency", type=int, default=50, help="ANALYSIS_CONCURRENCY of the server's worker")
    parser.add_argument("--format", choices=("API", "RETELL"), default="API", help="the endpoint's payload format")
    parser.add_argument("--rounds", type=int, default=3, help="reruns without, then with, the endpoint, this many times")
    parser.add_argument("--skip-rounds", action="store_true", help="only the drain (works on older delivery loops)")
    parser.add_argument("--skip-drain", action="store_true", help="only the reruns")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="gqlapi-bench-data-"))
    report: dict[str, Any] = {"when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                              "args": vars(args), "load_1m_at_start": round(os.getloadavg()[0], 2)}
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()}; {args.conversations} calls, analyzer {args.analyzer}",
          flush=True)
    env = {"ANALYSIS_CONCURRENCY": str(args.concurrency), "LOG_LEVEL": "WARNING"}
    with contextlib.ExitStack() as stack:
        if args.analyzer == "gemini":
            gemini = stack.enter_context(GeminiTestServer(delay_s=args.delay, record=False))
            env.update(GEMINI_API_KEY="bench", GEMINI_BASE_URL=gemini.base_url)
        # Each part in a database of its own: the drain's deliveries are written as they would be, not left by reruns.
        for part in ("rounds", "drain"):
            if getattr(args, f"skip_{part}"):
                continue
            with database(os.environ.get("DATABASE_URL")) as db_url:
                asyncio.run(migrate(db_url))
                key = cli("create-api-key", "--workspace", "bench", db_url=db_url, data_dir=data_dir).stdout.strip().splitlines()[-1]
                asyncio.run(load(db_url, args.conversations))
                if part == "rounds":
                    report.update(asyncio.run(runs(args, db_url, key, data_dir, env)))
                else:
                    report["drain"] = asyncio.run(backlog(db_url, data_dir, env))
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"events-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
