"""Test fixtures: a real PostgreSQL (TEST_DATABASE_URL, DATABASE_URL, else embedded), a template database
migrated once per session, and a fresh database per test cloned from it."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from graphql_api.app import create_app
from graphql_api.config import Settings
from graphql_api.db import EmbeddedPostgres, migrate, with_database


# Servers the tests start (python -m graphql_api ...) check every compiled query against the resolvers and
# answer INTERNAL on a difference, so every query of the suite is a case of the read engine's differential test.
os.environ.setdefault("READ_ENGINE_VERIFY", "1")


@pytest.fixture(scope="session")
def server_url() -> Any:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    directory = Path(tempfile.mkdtemp(prefix="gqlapi-pg-"))
    embedded = EmbeddedPostgres(directory, delete_on_stop=True)
    yield embedded.start()
    embedded.stop()


async def _admin(server_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn=with_database(server_url, "postgres"))


@pytest.fixture(scope="session")
async def template_db(server_url: str) -> AsyncIterator[str]:
    name = f"gqlapi_tpl_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await _admin(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    await migrate(with_database(server_url, name))
    yield name
    admin = await _admin(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    name = f"gqlapi_t_{secrets.token_hex(6)}"
    admin = await _admin(server_url)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    await admin.close()
    yield with_database(server_url, name)
    admin = await _admin(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def test_settings(db_url: str, **overrides: Any) -> Settings:
    # Tests poll fast with one key: no rate limit unless a test asks for one.
    overrides.setdefault("rate_limit_per_s", 0.0)
    # Every compiled query of the suite is checked against the resolvers (a difference answers INTERNAL).
    overrides.setdefault("read_engine_verify", True)
    return Settings(database_url=db_url, data_dir=Path(tempfile.mkdtemp(prefix="gqlapi-data-")), **overrides)


class Api:
    """An in-process client of the ASGI app, with the app's services at hand for assertions."""

    def __init__(self, app: Any, client: httpx.AsyncClient):
        self.app = app
        self.client = client

    @property
    def services(self) -> Any:
        return self.app.state.services

    @property
    def db(self) -> Any:
        return self.app.state.services.db

    async def key_for(self, workspace: str) -> str:
        from graphql_api.workspaces import create_api_key

        _, key = await create_api_key(db=self.db, workspace_name=workspace)
        return key

    async def workspace_id(self, name: str) -> int:
        from graphql_api.workspaces import ensure_workspace

        return (await ensure_workspace(db=self.db, name=name)).id

    async def gql(self, query: str, variables: dict | None = None, *, key: str | None) -> dict:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = await self.client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.asynccontextmanager
async def running_api(db_url: str, **settings: Any) -> AsyncIterator[Api]:
    app = create_app(test_settings(db_url, **settings), db_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield Api(app, client)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    async with running_api(db_url) as api:
        yield api


@pytest.fixture
def gemini() -> Any:
    """A Gemini-compatible server on loopback, driven through the real google-genai client."""
    from graphql_api.testing import GeminiTestServer

    with GeminiTestServer() as server:
        yield server


def data(result: dict) -> dict:
    """The data of a result that must have no errors."""
    assert not result.get("errors"), result.get("errors")
    return result["data"]


def error_codes(result: dict) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in result.get("errors") or []]
