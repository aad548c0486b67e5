"""The database: `databases` pooled connections for queries, named SQL from the package's sql/,
migrations, and the embedded PostgreSQL used when DATABASE_URL is unset.

Everything that touches `databases` (and through it SQLAlchemy) stays in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import signal
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import databases
import orjson
import structlog

log = structlog.stdlib.get_logger(__name__)

# Package data, so an installed package (a wheel, a container image) finds it as well as a checkout.
SQL_DIR: Traversable = files("graphql_api") / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
QUERIES_DIR = SQL_DIR / "queries"

_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --\s*$")
# A bind parameter is `:name`, never the second colon of a `::type` cast.
_PARAM = re.compile(r"(?<![:\w]):([a-zA-Z_]\w*)")
# Another named block (of any queries file), written in place: `{{name}}`.
_INCLUDE = re.compile(r"\{\{([a-z_][a-z0-9_]*)\}\}")
# Migrations take this advisory lock so that processes starting together apply them once.
_MIGRATION_LOCK = 7_201_554_113


@dataclass(frozen=True)
class NamedQuery:
    name: str
    sql: str  # with $1..$n placeholders
    params: tuple[str, ...]  # parameter name of each placeholder, in order


def parse_queries(files: dict[str, str]) -> dict[str, NamedQuery]:
    """Split queries files (file name -> text) into their named statements and turn `:name` into `$n` placeholders.

    A block can stand inside another one, of any file, as `{{name}}` (a fragment: the one WHERE clause that
    several statements share); it is written in place before the placeholders are numbered.
    """
    bodies: dict[str, str] = {}
    for source, text in files.items():
        blocks: dict[str, list[str]] = {}
        current: str | None = None
        for line in text.splitlines():
            m = _HEADER.match(line)
            if m:
                current = m.group(1)
                if current in blocks:
                    raise ValueError(f"{source}: query {current!r} defined twice")
                if current in bodies:
                    raise ValueError(f"{source}: query {current!r} already defined in another file")
                blocks[current] = []
            elif current is not None:
                blocks[current].append(line)
        for name, lines in blocks.items():
            bodies[name] = "\n".join(line for line in lines if not line.lstrip().startswith("--")).strip().rstrip(";")

    def expand(name: str, within: tuple[str, ...]) -> str:
        def include(match: re.Match[str]) -> str:
            fragment = match.group(1)
            if fragment not in bodies or fragment in within:
                raise ValueError(f"query {name!r} includes {fragment!r}, which is unknown or includes it in turn")
            return expand(fragment, (*within, fragment))

        return _INCLUDE.sub(include, bodies[name])

    queries = {}
    for name in bodies:
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in order:
                order.append(key)
            return f"${order.index(key) + 1}"

        queries[name] = NamedQuery(name, _PARAM.sub(number, expand(name, (name,))), tuple(order))
    return queries


def _sql_files(directory: Traversable) -> list[Traversable]:
    return sorted((f for f in directory.iterdir() if f.name.endswith(".sql") and f.is_file()), key=lambda f: f.name)


def load_queries(directory: Traversable = QUERIES_DIR) -> dict[str, NamedQuery]:
    return parse_queries({path.name: path.read_text(encoding="utf-8") for path in _sql_files(directory)})


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes back to the pool with: its session as it is.

    asyncpg's default reset (unlock advisory locks, close cursors, UNLISTEN, RESET ALL) is one more round
    trip after every statement. Pooled connections never LISTEN, SET, open cursors or take session-level
    advisory locks (transaction-level ones end with the transaction), and asyncpg still rolls back a
    transaction left open before calling this.
    """


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            schema="pg_catalog",
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
        )


class Database:
    """Named queries over a `databases` pool; each asyncio task gets its own pooled connection."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 20, statement_timeout_ms: int = 0):
        self.url = url
        # Every statement of this pool is cut off by PostgreSQL past the timeout (0: none).
        server_settings = {"statement_timeout": str(statement_timeout_ms)} if statement_timeout_ms else None
        # asyncpg reads the DSN itself so that unix-socket URLs (?host=/dir) work.
        self._database = databases.Database(
            url, dsn=url, min_size=min_size, max_size=max_size, init=_init_connection, server_settings=server_settings,
            reset=_keep_session,
        )
        self.queries = load_queries()
        self.statements_executed = 0
        # The read engine's statements go through a pool of their own, opened at their first use, whose
        # sessions plan each statement once (generic plans). Its statements have no optional conditions
        # (one statement per shape of arguments), so the generic plan is the one a custom plan would be,
        # and planning them at every execution (PostgreSQL's choice for them otherwise) cost more than
        # running them: 3.4 ms against 3.7 ms for a filtered page of 50 calls.
        self._compiled_settings = {"plan_cache_mode": "force_generic_plan", **(server_settings or {})}
        self._compiled_max = max_size
        self._compiled_pool: asyncpg.Pool | None = None
        self._compiled_opening = asyncio.Lock()

    async def connect(self) -> None:
        await self._database.connect()

    async def disconnect(self) -> None:
        pool, self._compiled_pool = self._compiled_pool, None
        if pool is not None:
            await pool.close()
        await self._database.disconnect()

    async def _compiled(self) -> asyncpg.Pool:
        async with self._compiled_opening:
            if self._compiled_pool is None:
                self._compiled_pool = await asyncpg.create_pool(
                    dsn=self.url, min_size=0, max_size=self._compiled_max,
                    server_settings=self._compiled_settings, reset=_keep_session,
                )
        return self._compiled_pool

    def _prepare(self, query_name: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
        query = self.queries[query_name]
        missing = [p for p in query.params if p not in params]
        if missing:
            raise KeyError(f"query {query_name} needs {missing}")
        self.statements_executed += 1
        return query.sql, [params[p] for p in query.params]

    @contextlib.asynccontextmanager
    async def _raw(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._database.connection() as conn:
                yield conn.raw_connection
        except Exception:
            self._forget_broken_connection()
            raise

    def _forget_broken_connection(self) -> None:
        """After a failure, drop this task's `databases` connection if no statement or transaction uses it.

        When the server goes away while `databases` releases a connection, it keeps the dead one as
        "acquired", and every later statement of the same task fails on "Connection is already
        acquired" forever: a long-lived task (a worker's loop) would never talk to the database again.
        """
        connection = self._database._connection  # this task's wrapper, if it has one
        if connection is not None and connection._connection_counter == 0:
            self._database._connection = None

    async def fetch_all(self, query_name: str, /, **params: Any) -> list[asyncpg.Record]:
        sql, args = self._prepare(query_name, params)
        async with self._raw() as conn:
            return await conn.fetch(sql, *args)

    async def fetch_one(self, query_name: str, /, **params: Any) -> asyncpg.Record | None:
        sql, args = self._prepare(query_name, params)
        async with self._raw() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetch_val(self, query_name: str, /, **params: Any) -> Any:
        sql, args = self._prepare(query_name, params)
        async with self._raw() as conn:
            return await conn.fetchval(sql, *args)

    async def fetch_compiled(self, sql: str, args: Sequence[Any]) -> asyncpg.Record:
        """The one row of a statement the read engine compiled (graphql_api/schema/compiler.py)."""
        self.statements_executed += 1
        pool = self._compiled_pool or await self._compiled()
        async with pool.acquire() as conn:
            return await conn.fetchrow(sql, *args)

    async def execute(self, query_name: str, /, **params: Any) -> str:
        sql, args = self._prepare(query_name, params)
        async with self._raw() as conn:
            return await conn.execute(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """All statements of this task inside the block commit together or not at all."""
        try:
            async with self._database.transaction():
                yield
        except Exception:
            self._forget_broken_connection()
            raise

    async def ping(self) -> bool:
        async with self._raw() as conn:
            return await conn.fetchval("SELECT 1") == 1


# ---- migrations -------------------------------------------------------------------------------


class MigrationError(RuntimeError):
    """The database's recorded migrations don't match this code's: the process must not start on it."""


# Checksums that released migrations had before they were edited in place (001 and 003, before the
# rule that a released migration is never edited). A database migrated by such a release recorded one
# of these; it is accepted beside the file's own checksum, and anything else is refused. No entry is
# ever added here: a released migration is not edited again, a change goes in a new migration.
SUPERSEDED_CHECKSUMS: dict[int, frozenset[str]] = {
    1: frozenset({
        "e9def415acfabf759a1b66524694f7150195340e22594e4aa6c845b7ecb74f83",  # 001_init as of a0792b9
    }),
    3: frozenset({
        "756f5b2c50757fc7e81de671298215479e609d3c84f6b18315fc3cda30bf8020",  # 003_reruns as of 81c3779
        "d3b05c0f6fbbca65d429bbcd4c8607652ab407a207afad528a7cdf0f52be737b",  # 003_reruns as of 1d8a591
    }),
}


def migration_checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def migration_files(directory: Traversable = MIGRATIONS_DIR) -> list[tuple[int, str, Traversable]]:
    found = []
    for path in _sql_files(directory):
        number, _, rest = path.name.removesuffix(".sql").partition("_")
        found.append((int(number), rest, path))
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1..n without gaps, found {numbers}")
    return found


def check_recorded_migrations(recorded: Sequence[tuple[int, str, str]], files: dict[int, tuple[str, str]]) -> None:
    """Refuse a database migrated past this code, or with a migration this code never released.

    `recorded` holds (version, name, checksum) rows of schema_migrations; `files` maps each of this
    code's migration numbers to (name, checksum).
    """
    newer = [(version, name) for version, name, _ in recorded if version not in files]
    if newer:
        found = ", ".join(f"{version:03d}_{name}" for version, name in newer)
        raise MigrationError(
            f"the database schema is newer than this code: it has migration {found}, and this code only knows "
            f"001..{max(files, default=0):03d}. A newer release migrated it; run that release (or a later one) "
            "against this database, not this one."
        )
    for version, name, checksum in recorded:
        file_name, file_checksum = files[version]
        if checksum != file_checksum and checksum not in SUPERSEDED_CHECKSUMS.get(version, ()):
            raise MigrationError(
                f"checksum mismatch for migration {version:03d}_{file_name}: this database applied "
                f"{version:03d}_{name} with checksum {checksum[:12]}, which is neither this code's file "
                f"({file_checksum[:12]}) nor any released version of it. Released migrations are never edited: "
                "restore the file as released and fix forward with a new migration."
            )


async def migrate(url: str) -> list[str]:
    """Apply the migrations not yet recorded, in order, each in its own transaction, after checking the
    recorded ones (MigrationError when the database is newer than the code or a checksum is unknown)."""
    migrations = [(number, name, path.read_text(encoding="utf-8")) for number, name, path in migration_files()]
    applied_now = []
    conn = await asyncpg.connect(dsn=url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version int PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        recorded = [
            (r["version"], r["name"], r["checksum"])
            for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        ]
        check_recorded_migrations(
            recorded, {number: (name, migration_checksum(text)) for number, name, text in migrations}
        )
        done = {version for version, _, _ in recorded}
        for number, name, text in migrations:
            if number in done:
                continue
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(text)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    number, name, migration_checksum(text),
                )
            log.info("migration_applied", version=number, name=name, ms=round((time.perf_counter() - started) * 1000))
            applied_now.append(f"{number:03d}_{name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied_now


# ---- embedded PostgreSQL ----------------------------------------------------------------------


class EmbeddedPostgres:
    """A PostgreSQL server from the `pgserver` wheel, its data under `directory`, on a unix socket.

    pgserver records the pid of every process using the server in `directory/.handle_pids.json` and
    stops the server when the last one lets go; a pid whose process died without letting go (SIGKILL,
    a crash, a host restart) is dropped whenever a process starts or lets go, or the server would never
    stop again.
    """

    def __init__(self, directory: Path, *, delete_on_stop: bool = False):
        self.directory = directory
        self.delete_on_stop = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        started = time.perf_counter()
        # A SIGTERM or SIGINT that comes while the server starts is held back until this process is
        # recorded as a user: raised halfway, it would leave a running server that nobody stops.
        with _stop_signals_held():
            pgserver = _import_pgserver()
            self.directory.mkdir(parents=True, exist_ok=True)
            self._forget_dead_users()
            # "stop": the server stops when the last process using this directory lets go of it.
            mode = "delete" if self.delete_on_stop else "stop"
            self._server = pgserver.get_server(self.directory, cleanup_mode=mode)
        log.info("embedded_postgres_ready", dir=self.directory, pid=self._server.get_pid(),
                 ms=round((time.perf_counter() - started) * 1000))
        return self._server.get_uri()

    def stop(self) -> None:
        """Let go of the server; it stops when no other live process uses it."""
        if self._server is None:
            return
        server, self._server = self._server, None
        with _stop_signals_held():  # a second Ctrl-C must not leave the server half stopped
            self._forget_dead_users()  # a user that died while this process ran
            server.cleanup()
        others = server.global_process_id_list.get()
        if others:
            log.info("embedded_postgres_left_running", dir=self.directory, users=",".join(map(str, others)))
        else:
            log.info("embedded_postgres_stopped", dir=self.directory)

    def _forget_dead_users(self) -> None:
        pgserver = _import_pgserver()
        users = pgserver.utils.DiskList(self.directory / ".handle_pids.json")
        # pgserver's own lock, the one its get_server and cleanup hold while they read and write the record.
        with pgserver.PostgresServer._lock:
            pids = users.get()
            dead = [pid for pid in pids if not _process_alive(pid)]
            if dead:
                users.put([pid for pid in pids if pid not in dead])
        if dead:
            log.info("embedded_postgres_dead_users_forgotten", dir=self.directory, pids=",".join(map(str, dead)))


def _import_pgserver() -> Any:
    # pgserver asks platformdirs for a runtime directory (its lock file) when it is imported. Without
    # XDG_RUNTIME_DIR (containers, CI, services) platformdirs falls back to runtime-<uid> in the temporary
    # directory, which serves that purpose, and warns on stderr; only that warning is silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning)
        import pgserver  # imported here: only the embedded mode needs it
        import pgserver.utils
    return pgserver


def _process_alive(pid: int) -> bool:
    import psutil  # a pgserver dependency

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Block SIGTERM and SIGINT in the block; one that came meanwhile is delivered when it ends."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return parts._replace(path="/" + name).geturl()


def describe_url(url: str) -> str:
    """A URL for logs: no password."""
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", ["local socket"])[0]
    return f"postgresql://{parts.username or ''}@{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"
