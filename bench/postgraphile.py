"""PostGraphile 5, the peer bench/queries.py measures this project against: installed with `npm ci` into
bench/peer/node_modules (ignored by git), given its computed columns in the bench database, run as one node process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg

from graphql_api.db import parse_queries
from graphql_api.testing.processes import ServerProcess, free_port

PEER_DIR = Path(__file__).resolve().parent / "peer"
INSTALL_TIMEOUT_S = 600


def locked_version() -> str:
    """The PostGraphile version package-lock.json pins."""
    lock = json.loads((PEER_DIR / "package-lock.json").read_text())
    return lock["packages"]["node_modules/postgraphile"]["version"]


def installed_version() -> str | None:
    path = PEER_DIR / "node_modules" / "postgraphile" / "package.json"
    return json.loads(path.read_text())["version"] if path.exists() else None


def unavailable() -> str | None:
    """Why the peer can't run on this machine (node or npm missing), or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not on PATH" if missing else None


def is_installed() -> bool:
    return installed_version() == locked_version()


def install(timeout: float = INSTALL_TIMEOUT_S) -> float:
    """`npm ci` in bench/peer (exact versions from package-lock.json); returns the seconds it took."""
    started = time.perf_counter()
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER_DIR, check=True, timeout=timeout)
    if not is_installed():
        raise RuntimeError(f"npm ci left PostGraphile {installed_version()} in {PEER_DIR}, the lock pins {locked_version()}")
    return time.perf_counter() - started


async def prepare_database(url: str) -> dict[str, Any]:
    """The computed columns the peer's queries use; says how `currentSuccessful` is served.

    With migration 009's conversations.current_successful (the current result's successful, kept by a trigger)
    the peer filters on that column, as our server can; without it, on a computed column that looks the
    current result up per scanned call.
    """
    sql = parse_queries({"database.sql": (PEER_DIR / "database.sql").read_text()})
    conn = await asyncpg.connect(dsn=url, timeout=30)
    try:
        has_column = await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM information_schema.columns
                              WHERE table_schema = current_schema() AND table_name = 'conversations'
                                AND column_name = 'current_successful')""")
        await conn.execute(sql["conversations_analysis"].sql)
        if not has_column:
            await conn.execute(sql["conversations_current_successful"].sql)
    finally:
        await conn.close()
    return {
        "current_successful": "column" if has_column else "computed column",
        "note": "condition currentSuccessful on conversations.current_successful (migration 009)" if has_column else
                "conversations has no current_successful column (migration 009 not applied): the peer filters on "
                "a computed column conversations_current_successful(), which looks up each scanned call's result",
    }


class PeerProcess(ServerProcess):
    """`node --require ./polyfill.cjs server.mjs` on a free port; Node 20 lacks Promise.withResolvers."""

    def __init__(self, *, db_url: str, data_dir: Path, pool_max: int = 20):
        self.command = "postgraphile"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"postgraphile-{self.port}.log"
        env = {**os.environ, "DATABASE_URL": db_url, "PORT": str(self.port), "PG_POOL_MAX": str(pool_max),
               "NODE_ENV": "production"}
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            ["node", "--require", "./polyfill.cjs", "server.mjs"], cwd=PEER_DIR, env=env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> PeerProcess:
        self.wait_ready_log(f"listening on {self.port}", timeout)
        return self
