"""Migrations apply from an empty database, are recorded, and the schema enforces the invariants."""

from __future__ import annotations

import asyncpg
import pytest

from graphql_api.db import migrate, migration_files, with_database


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
