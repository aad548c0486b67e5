"""What an export costs the server in memory: the peak RSS of a server process exporting a small and a large number
of current results (CSV and JSON lines, and the large one read by a slow client too), each on a fresh process after
one warm-up export, so that every figure starts from the same state.

    .venv/bin/python -m bench.export [--rows 50000] [--small 1000] [--slow-mb-s 4]

Flat means the peak does not grow with the number of rows: rows are read in keyset pages of graphql_api.export's
PAGE_ROWS and written as they are read, and a slow client holds the server back instead of filling its memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.reruns import RESULTS_DIR, database
from graphql_api.client import RecordCounter
from graphql_api.db import migrate
from graphql_api.export import PAGE_ROWS
from graphql_api.testing.processes import ServerProcess, cli

FIELDS = [
    {"name": "visit_type", "type": "ENUM", "description": "Kind of visit", "examples": [],
     "choices": ["cleaning", "checkup", "emergency"], "required": True},
    {"name": "party_size", "type": "NUMBER", "description": "People booked", "examples": [], "choices": None,
     "required": False},
    {"name": "notes", "type": "STRING", "description": "Anything else", "examples": [], "choices": None,
     "required": False},
]

# An agent, its version 0, and finished calls each with a current result whose summary and custom data hold commas,
# quotes, a newline and text beyond ASCII, as real ones do.
AGENT_SQL = "INSERT INTO agents (workspace_id, agent_id, name, channel) VALUES ($1, $2, 'Export bench', 'VOICE')"
VERSION_SQL = """INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, published_at, data_fields,
                                             model)
VALUES ($1, $2, 0, true, now(), $3::jsonb, 'gemini-2.5-flash')"""
CALLS_SQL = """INSERT INTO conversations (workspace_id, conversation_id, kind, agent_id, agent_version, conversation_type,
                           status, direction, started_at, ended_at, duration_ms, transcript, sort_at)
SELECT $1, $2 || '_' || lpad(i::text, 7, '0'), 'CALL', $2, 0, 'phone_call', 'ended', 'inbound', at,
       at + interval '90 seconds', 90000, 'Agent: Riverside Dental. User: a cleaning, please.', at
FROM generate_series(1, $3::int) AS i, LATERAL (SELECT timestamptz '2026-01-01' + make_interval(mins => i) AS at) t"""
RESULTS_SQL = """INSERT INTO analysis_results (workspace_id, conversation_id, trigger, agent_id, agent_version, model,
                              summary, successful, user_sentiment, in_voicemail, custom_data, input_tokens,
                              output_tokens, cost_usd, charged, is_current)
SELECT $1, $2 || '_' || lpad(i::text, 7, '0'), 'INITIAL', $2, 0, 'gemini-2.5-flash',
       'Booked a cleaning, "Tuesday" at 2 PM for caller #' || i || E'.\\nFollow-up: none, ça va.', i % 3 <> 0,
       (ARRAY['POSITIVE', 'NEUTRAL', 'NEGATIVE'])[1 + i % 3], false,
       jsonb_build_object('visit_type', (ARRAY['cleaning', 'checkup', 'emergency'])[1 + i % 3], 'party_size', 1 + i % 4,
                          'notes', CASE WHEN i % 5 = 0 THEN NULL ELSE 'Prefers "afternoons", after 2 PM' END),
       1200 + i % 100, 80, 0.00012345, true, true
FROM generate_series(1, $3::int) AS i"""


async def load_results(conn: asyncpg.Connection, *, workspace_id: int, agent_id: str, rows: int) -> None:
    """Add an agent whose `rows` calls each have a current result (tests/test_export.py's large export uses it too)."""
    await conn.execute(AGENT_SQL, workspace_id, agent_id)
    await conn.execute(VERSION_SQL, workspace_id, agent_id, json.dumps(FIELDS))
    await conn.execute(CALLS_SQL, workspace_id, agent_id, rows)
    # The results' triggers look each call up: with statistics of a table still small, their plans would scan it.
    await conn.execute("ANALYZE conversations")
    await conn.execute(RESULTS_SQL, workspace_id, agent_id, rows)


class PeakRss:
    """The resident memory of a process, sampled every few milliseconds while the block runs; its peak."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()

    def __enter__(self) -> PeakRss:
        self.before = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def download(base_url: str, key: str, agent_id: str, fmt: str, *, slow_bytes_s: float | None = None) -> tuple[int, int]:
    """(rows, bytes) of one export, read as it arrives; a slow reader takes at most `slow_bytes_s` a second."""
    size = 0
    counter = RecordCounter(fmt)
    started = time.monotonic()
    with httpx.stream("GET", f"{base_url}/export/results", params={"agentId": agent_id, "format": fmt},
                      headers={"Authorization": f"Bearer {key}"}, timeout=300) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(65536):
            size += len(chunk)
            counter.feed(chunk)
            if slow_bytes_s:
                time.sleep(max(0.0, size / slow_bytes_s - (time.monotonic() - started)))
    assert not counter.truncated, f"the export of {agent_id} was cut short"
    return counter.rows, size


def measure(db_url: str, data_dir: Path, key: str, label: str, agent_id: str, fmt: str,
            slow_bytes_s: float | None = None) -> dict[str, Any]:
    """One export on a fresh server process, after a warm-up export of a few rows (imports, pools, prepared plans)."""
    with ServerProcess(db_url=db_url, data_dir=data_dir, env={"LOG_LEVEL": "WARNING", "RUN_WORKERS": "0"}) as server:
        download(server.base_url, key, "agent_warmup", fmt)
        with PeakRss(server.process.pid) as rss:
            started = time.perf_counter()
            rows, size = download(server.base_url, key, agent_id, fmt, slow_bytes_s=slow_bytes_s)
            seconds = time.perf_counter() - started
    figures = {
        "label": label, "format": fmt, "rows": rows, "bytes": size, "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds), "rss_before_mb": round(rss.before / 2**20, 1),
        "rss_peak_mb": round(rss.peak / 2**20, 1), "rss_growth_mb": round((rss.peak - rss.before) / 2**20, 1),
    }
    print(f"{label:<28} {fmt:<5} {rows:>7,} rows {size / 1e6:>7.1f} MB {seconds:>6.2f} s {figures['rows_per_s']:>8,} rows/s"
          f"   RSS {figures['rss_before_mb']:>6.1f} -> peak {figures['rss_peak_mb']:>6.1f} MB"
          f" (+{figures['rss_growth_mb']:.1f})")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the large export")
    parser.add_argument("--small", type=int, default=1_000, help="rows of the small export")
    parser.add_argument("--slow-mb-s", type=float, default=4.0, help="how fast the slow client reads, MB/s")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="gqlapi-bench-export-"))
    with database(os.environ.get("DATABASE_URL")) as db_url:
        asyncio.run(migrate(db_url))
        created = cli("create-api-key", "--workspace", "bench", db_url=db_url, data_dir=data_dir)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]

        async def load() -> None:
            conn = await asyncpg.connect(dsn=db_url)
            try:
                workspace_id = await conn.fetchval("SELECT id FROM workspaces WHERE name = 'bench'")
                for agent_id, rows in (("agent_warmup", 10), ("agent_small", args.small), ("agent_large", args.rows)):
                    await load_results(conn, workspace_id=workspace_id, agent_id=agent_id, rows=rows)
                await conn.execute("ANALYZE")
            finally:
                await conn.close()

        load_started = time.perf_counter()
        asyncio.run(load())
        print(f"loaded {args.small + args.rows:,} calls with results in {time.perf_counter() - load_started:.1f}s; "
              f"pages of {PAGE_ROWS} rows\n")
        runs = [
            measure(db_url, data_dir, key, f"{args.small:,} rows", "agent_small", "csv"),
            measure(db_url, data_dir, key, f"{args.rows:,} rows", "agent_large", "csv"),
            measure(db_url, data_dir, key, f"{args.small:,} rows", "agent_small", "jsonl"),
            measure(db_url, data_dir, key, f"{args.rows:,} rows", "agent_large", "jsonl"),
            measure(db_url, data_dir, key, f"{args.rows:,} rows, slow client", "agent_large", "csv",
                    slow_bytes_s=args.slow_mb_s * 1e6),
        ]
    report = {"when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(), "page_rows": PAGE_ROWS,
              "runs": runs}
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"export-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    small, large = runs[0], runs[1]
    print(f"\nresults: {out}")
    print(f"summary: peak RSS {small['rss_peak_mb']} MB for {small['rows']:,} rows, {large['rss_peak_mb']} MB for "
          f"{large['rows']:,} rows ({large['rows'] // max(small['rows'], 1)}x the rows, "
          f"{large['rss_peak_mb'] / small['rss_peak_mb']:.2f}x the memory)")


if __name__ == "__main__":
    main()
