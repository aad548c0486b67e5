"""Migrations apply from an empty database, are recorded, are never edited once released, refuse a database
they don't match, and the schema enforces the invariants."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import asyncpg
import pytest

from graphql_api.db import (
    MIGRATIONS_DIR,
    SUPERSEDED_CHECKSUMS,
    MigrationError,
    migrate,
    migration_checksum,
    migration_files,
    with_database,
)
from tests.conftest import running_api

MANIFEST = MIGRATIONS_DIR / "SHA256SUMS"


def released_checksums() -> dict[str, str]:
    """File name -> checksum, from the committed manifest."""
    lines = MANIFEST.read_text(encoding="utf-8").splitlines()
    return {name: checksum for checksum, name in (line.split() for line in lines if line and not line.startswith("#"))}


async def test_migrations_apply_to_an_empty_database_once(server_url: str) -> None:
    admin = await asyncpg.connect(dsn=with_database(server_url, "postgres"))
    await admin.execute('CREATE DATABASE "gqlapi_migrate_empty"')
    try:
        url = with_database(server_url, "gqlapi_migrate_empty")
        applied = await migrate(url)
        assert applied == [f"{n:03d}_{name}" for n, name, _ in migration_files()]
        assert await migrate(url) == []  # a second run has nothing to do
        conn = await asyncpg.connect(dsn=url)
        try:
            tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
        assert {"workspaces", "api_keys", "agents", "agent_versions", "conversations", "analysis_results", "charges"} <= tables
        assert recorded == len(migration_files())
    finally:
        await admin.execute('DROP DATABASE "gqlapi_migrate_empty" WITH (FORCE)')
        await admin.close()


def test_released_migrations_are_never_edited() -> None:
    released = released_checksums()
    files = {path.name: migration_checksum(path.read_text(encoding="utf-8")) for _, _, path in migration_files()}
    edited = [name for name in files if name in released and files[name] != released[name]]
    assert not edited, (
        f"released migrations edited: {', '.join(edited)}. A released migration is never edited (databases have "
        "applied it as it was): restore it and fix forward with a new migration."
    )
    removed = sorted(set(released) - set(files))
    assert not removed, f"released migrations removed: {', '.join(removed)}; restore them and fix forward."
    new = [f"{checksum}  {name}" for name, checksum in files.items() if name not in released]
    assert not new, (
        "migrations missing from graphql_api/sql/migrations/SHA256SUMS; once the new migration is final, add:\n"
        + "\n".join(new)
    )


def test_superseded_checksums_are_earlier_versions_of_released_migrations() -> None:
    current = {number: migration_checksum(path.read_text(encoding="utf-8")) for number, _, path in migration_files()}
    assert SUPERSEDED_CHECKSUMS.keys() <= current.keys()
    for number, checksums in SUPERSEDED_CHECKSUMS.items():
        assert current[number] not in checksums
        assert all(len(checksum) == 64 and int(checksum, 16) >= 0 for checksum in checksums)


async def _record(db_url: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("version", "checksum"),
    [(version, checksum) for version, checksums in sorted(SUPERSEDED_CHECKSUMS.items()) for checksum in sorted(checksums)],
)
async def test_a_database_migrated_by_an_earlier_release_of_an_edited_migration_starts(
    db_url: str, version: int, checksum: str
) -> None:
    await _record(db_url, "UPDATE schema_migrations SET checksum = $2 WHERE version = $1", version, checksum)
    assert await migrate(db_url) == []  # what every process runs as it starts


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GEMINI_BASE_URL")}
    env.update(DATABASE_URL=db_url, HOST="127.0.0.1", PORT="1")  # never serves: refused before binding
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [sys.executable, "-m", "graphql_api", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
            check=False,
        )


async def test_a_migration_edited_after_release_stops_the_start(db_url: str) -> None:
    await _record(db_url, "UPDATE schema_migrations SET checksum = $1 WHERE version = 3", migration_checksum("edited"))
    with pytest.raises(MigrationError, match=r"checksum mismatch for migration 003_reruns.*fix forward"):
        await migrate(db_url)
    with pytest.raises(MigrationError, match="checksum mismatch"):
        async with running_api(db_url):
            pass
    served = _cli(db_url, "serve")
    assert served.returncode == 1
    assert served.stderr.startswith("error: checksum mismatch for migration 003_reruns"), served.stderr
    assert "Traceback" not in served.stderr


async def test_a_database_newer_than_the_code_is_refused(db_url: str) -> None:
    future = len(migration_files()) + 1
    await _record(
        db_url, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, 'from_a_newer_release', 'x')", future
    )
    expected = f"schema is newer than this code: it has migration {future:03d}_from_a_newer_release"
    with pytest.raises(MigrationError, match=expected):
        await migrate(db_url)
    for command in ("serve", "migrate"):
        refused = _cli(db_url, command)
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"error: the database {expected}"), refused.stderr
        assert "Traceback" not in refused.stderr


async def _seed_agent(conn: asyncpg.Connection) -> None:
    ws = await conn.fetchval("INSERT INTO workspaces (name) VALUES ('w') RETURNING id")
    await conn.execute("INSERT INTO agents (workspace_id, agent_id, name, channel) VALUES ($1, 'agent_a', 'A', 'VOICE')", ws)
    await conn.execute(
        "INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, published_at, model) "
        "VALUES ($1, 'agent_a', 0, true, now(), 'offline'), ($1, 'agent_a', 1, false, NULL, 'offline')",
        ws,
    )


async def test_published_versions_cannot_be_changed_by_any_path(db_url: str) -> None:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        await _seed_agent(conn)
        with pytest.raises(asyncpg.CheckViolationError, match="is published"):
            await conn.execute("UPDATE agent_versions SET summary_prompt = 'x' WHERE version = 0")
        await conn.execute("UPDATE agent_versions SET summary_prompt = 'x' WHERE version = 1")  # the draft is editable
    finally:
        await conn.close()


async def test_an_agent_has_one_draft_and_it_is_the_latest_version(db_url: str) -> None:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        await _seed_agent(conn)
        ws = await conn.fetchval("SELECT id FROM workspaces")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO agent_versions (workspace_id, agent_id, version, model) VALUES ($1, 'agent_a', 2, 'offline')", ws
            )
        with pytest.raises(asyncpg.CheckViolationError, match="latest version"):
            await conn.execute(
                "INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, published_at, model) "
                "VALUES ($1, 'agent_a', 5, true, now(), 'offline')",
                ws,
            )
    finally:
        await conn.close()


async def test_one_current_analysis_per_conversation(db_url: str) -> None:
    conn = await asyncpg.connect(dsn=db_url)
    try:
        await _seed_agent(conn)
        ws = await conn.fetchval("SELECT id FROM workspaces")
        await conn.execute(
            "INSERT INTO conversations (workspace_id, conversation_id, kind, agent_id, agent_version, status, sort_at) "
            "VALUES ($1, 'call_1', 'CALL', 'agent_a', 0, 'ended', now())",
            ws,
        )
        insert = (
            "INSERT INTO analysis_results (workspace_id, conversation_id, trigger, agent_id, agent_version, model, charged, is_current) "
            "VALUES ($1, 'call_1', 'INITIAL', 'agent_a', 0, 'offline', false, true)"
        )
        await conn.execute(insert, ws)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, ws)
    finally:
        await conn.close()
