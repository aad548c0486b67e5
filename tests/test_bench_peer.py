"""PostGraphile, the peer `make bench-queries` measures against, answers the benchmark's pages as our server does:
a short slice of bench/queries.py (300 calls, both servers started once), so the side-by-side run can't drift."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench import postgraphile
from bench.queries import OURS, Connection, create_key, graphql, load_data, peer_documents, post_request, same_page
from graphql_api.testing.processes import ServerProcess


def _skip_reason() -> str | None:
    if reason := postgraphile.unavailable():
        return f"the peer needs node and npm: {reason}"
    if not postgraphile.is_installed():
        return (f"PostGraphile {postgraphile.locked_version()} is not installed in bench/peer/node_modules; "
                "`make bench-peer-setup` installs it (npm ci: about 30 s and the npm registry, which make test "
                "does not count on)")
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


async def _page(process: ServerProcess, key: str, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    conn = Connection("127.0.0.1", process.port)
    try:
        data, _, _ = await graphql(conn, post_request("127.0.0.1", process.port, key, document, variables))
    finally:
        await conn.close()
    return data


async def test_postgraphile_returns_the_same_first_next_and_filtered_pages_as_ours(db_url: str, tmp_path: Path) -> None:
    key, workspace_id = await create_key(db_url)
    await load_data(db_url, workspace_id, 300, seed=7)
    await postgraphile.prepare_database(db_url)
    peer_docs = peer_documents(workspace_id)
    ours = ServerProcess(db_url=db_url, data_dir=tmp_path, env={"RUN_WORKERS": "0"})
    peer = postgraphile.PeerProcess(db_url=db_url, data_dir=tmp_path, pool_max=4)
    try:
        await asyncio.gather(asyncio.to_thread(ours.wait_ready, 60), asyncio.to_thread(peer.wait_ready, 60))

        first_ours = await _page(ours, key, OURS["first"])
        first_peer = await _page(peer, key, peer_docs["first"])
        assert len(first_ours["calls"]["edges"]) == 50 and first_ours["calls"]["pageInfo"]["hasNextPage"]
        assert same_page(first_ours, first_peer) is None

        # The next page, each server after its own cursor of the first page's last call.
        next_ours = await _page(ours, key, OURS["deep"], {"after": first_ours["calls"]["pageInfo"]["endCursor"]})
        next_peer = await _page(peer, key, peer_docs["deep"], {"after": first_peer["calls"]["pageInfo"]["endCursor"]})
        assert next_ours["calls"]["edges"][0]["node"]["id"] != first_ours["calls"]["edges"][0]["node"]["id"]
        assert same_page(next_ours, next_peer) is None

        filtered_ours = await _page(ours, key, OURS["filter"])
        filtered_peer = await _page(peer, key, peer_docs["filter"])
        assert filtered_ours["calls"]["edges"], "the seeded data has successful calls of version 1"
        assert same_page(filtered_ours, filtered_peer) is None
    finally:
        ours.stop()
        peer.stop()
