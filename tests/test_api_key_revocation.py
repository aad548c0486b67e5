"""Revoking an API key: `list-api-keys` and `revoke-api-key`, and a revoked key's WebSockets closed (4403) and its
HTTP requests refused within seconds on every server process."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import httpx
import websockets

from graphql_api.testing.processes import ServerProcess, cli
from tests.conftest import error_codes
from tests.test_websocket_limits import LEGACY, TRANSPORT, acked, new_key, still_open, until_closed, ws_url


def _listing(db_url: str, tmp_path: Path, *args: str) -> list[list[str]]:
    listed = cli("list-api-keys", *args, db_url=db_url, data_dir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split() for line in listed.stdout.strip().splitlines()]
    assert header == ["PREFIX", "WORKSPACE", "CREATED", "REVOKED"]
    return rows


async def test_list_and_revoke_api_keys_from_the_command_line(db_url, tmp_path) -> None:
    demo, other = await new_key(db_url, "demo"), await new_key(db_url, "other")
    rows = _listing(db_url, tmp_path)
    assert [(r[0], r[1], r[3]) for r in rows] == [(demo[:10], "demo", "-"), (other[:10], "other", "-")]
    assert all(r[2].endswith("Z") for r in rows)
    assert not any(demo in line or other in line for row in rows for line in row)  # never the key itself
    assert [r[0] for r in _listing(db_url, tmp_path, "--workspace", "other")] == [other[:10]]
    assert _listing(db_url, tmp_path, "--workspace", "nobody") == []

    # By the prefix the listing shows: it says what it revoked.
    revoked = cli("revoke-api-key", demo[:10], db_url=db_url, data_dir=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"revoked {demo[:10]} (workspace demo, created ")
    assert [(r[0], r[3] != "-") for r in _listing(db_url, tmp_path)] == [(demo[:10], True), (other[:10], False)]
    # Nothing left to revoke: a non-zero exit that says why.
    again = cli("revoke-api-key", demo, db_url=db_url, data_dir=tmp_path)
    assert again.returncode == 1 and "already revoked" in again.stderr and again.stdout == ""
    for unknown in (other[:9], other + "x"):
        missed = cli("revoke-api-key", unknown, db_url=db_url, data_dir=tmp_path)
        assert missed.returncode == 1 and "no API key matches" in missed.stderr, (unknown, missed)
    # By the whole key.
    assert cli("revoke-api-key", other, db_url=db_url, data_dir=tmp_path).returncode == 0
    assert all(r[3] != "-" for r in _listing(db_url, tmp_path))


async def _query(server: ServerProcess, key: str) -> dict:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        response = await client.post("/graphql", headers={"Authorization": f"Bearer {key}"},
                                     json={"query": "{ agents(first: 1) { nodes { id } } }"})
    return response.json()


async def test_revoking_a_key_closes_its_sockets_and_refuses_it_on_every_process(db_url, tmp_path) -> None:
    revoked_key, kept_key = await new_key(db_url, "demo"), await new_key(db_url, "demo")
    with ServerProcess(db_url=db_url, data_dir=tmp_path) as one, ServerProcess(db_url=db_url, data_dir=tmp_path) as two:
        doomed = [await acked(one, revoked_key, TRANSPORT), await acked(two, revoked_key, LEGACY),
                  await acked(two, revoked_key, TRANSPORT)]
        kept = await acked(one, kept_key, TRANSPORT)
        for server in (one, two):  # both processes have the key in their caches
            assert not (await _query(server, revoked_key)).get("errors")

        revoked = await asyncio.to_thread(cli, "revoke-api-key", revoked_key[:10], db_url=db_url, data_dir=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        closes = await asyncio.gather(*(until_closed(ws) for ws in doomed))
        assert [close[:2] for close in closes] == [(4403, "Forbidden: API key revoked")] * 3
        assert time.monotonic() - started < 3
        for server in (one, two):
            assert error_codes(await _query(server, revoked_key)) == ["UNAUTHENTICATED"]
            assert not (await _query(server, kept_key)).get("errors")
        # The other key's socket is untouched; a new socket with the revoked key is refused.
        assert await still_open(kept, TRANSPORT)
        await kept.close()
        async with websockets.connect(ws_url(two), subprotocols=[TRANSPORT]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {revoked_key}"}}))
            assert (await until_closed(ws))[0] == 4403
    for server in (one, two):
        assert "Traceback" not in server.log()
        assert "api_key_revoked key_id=" in server.log()


async def test_a_key_revoked_or_deleted_with_plain_sql_closes_its_sockets_too(db_url, tmp_path) -> None:
    first, second = await new_key(db_url, "demo"), await new_key(db_url, "gone")
    with ServerProcess(db_url=db_url, data_dir=tmp_path) as server:
        by_update, by_delete = await acked(server, first, TRANSPORT), await acked(server, second, LEGACY)
        conn = await asyncpg.connect(dsn=db_url)
        try:
            await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_prefix = $1", first[:10])
            assert (await until_closed(by_update))[:2] == (4403, "Forbidden: API key revoked")
            await conn.execute("DELETE FROM workspaces WHERE name = 'gone'")  # its keys go with it
            assert (await until_closed(by_delete))[:2] == (4403, "Forbidden: API key revoked")
        finally:
            await conn.close()
