"""A query costs a fixed number of SQL statements whatever the size of its pages: one, compiled by the read
engine; a few batched ones, through the resolvers (READ_ENGINE=off, and the fallback)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import data, running_api
from tests.factories import call, load, voice_agent

NESTED_PAGE = """query($first: Int) {
  calls(first: $first) {
    edges { node { id agent { id name } agentVersion { version analysisConfig { model } }
                   analysis { summary successful agentVersion { version } } analysisHistory { id } } }
  }
}"""

FRAGMENT_PAGE = """query($first: Int) { calls(first: $first) { nodes { ...C } } }
fragment C on Call { id agent { name } agentVersion { version } analysis { summary } }"""

AGENTS_WITH_CALLS = """{ agents { nodes { id draft { version } versions { version }
  calls(first: 2) { nodes { id analysis { summary } } } } } }"""


@pytest.fixture(params=["compiled", "resolvers"])
async def api(request, db_url: str) -> AsyncIterator:
    # No verification here: it runs every query twice, and the statements are what is counted.
    async with running_api(db_url, read_engine=request.param == "compiled", read_engine_verify=False) as api:
        api.path = request.param
        yield api


async def _statements(api, key, query, first) -> tuple[int, int]:
    before = api.db.statements_executed
    result = data(await api.gql(query, {"first": first}, key=key))
    return api.db.statements_executed - before, len(result["calls"]["edges" if "edges" in result["calls"] else "nodes"])


async def test_nested_page_statement_count_does_not_grow_with_page_size(api) -> None:
    key = await api.key_for("acme")
    records = [voice_agent("agent_a", 0), voice_agent("agent_b", 0)]
    records += [voice_agent(agent, v) for agent in ("agent_a", "agent_b") for v in (1, 2)]
    records += [call(f"call_{i:03d}", agent_id=("agent_a", "agent_b")[i % 2], version=i % 3, minute=i) for i in range(60)]
    await load(api, "acme", records)

    await api.gql("{ agents { nodes { id } } }", key=key)  # warm the key cache: auth is not the point here
    small, got_small = await _statements(api, key, NESTED_PAGE, 5)
    large, got_large = await _statements(api, key, NESTED_PAGE, 50)
    assert (got_small, got_large) == (5, 50)
    assert small == large
    frag_small, _ = await _statements(api, key, FRAGMENT_PAGE, 5)
    frag_large, _ = await _statements(api, key, FRAGMENT_PAGE, 50)
    if api.path == "compiled":
        assert (large, frag_large) == (1, 1)
    else:
        # page + agents + versions + history (the current analysis comes with the page)
        assert large <= 5, large
        assert frag_small == frag_large <= 4


async def test_agent_lists_with_nested_calls_batch_across_agents(api) -> None:
    key = await api.key_for("acme")
    records = [voice_agent(f"agent_{n}", 0) for n in range(8)]
    records += [call(f"call_{n}_{i}", agent_id=f"agent_{n}", minute=i) for n in range(8) for i in range(3)]
    await load(api, "acme", records)
    await api.gql("{ agents { nodes { id } } }", key=key)
    before = api.db.statements_executed
    result = data(await api.gql("{ agents { nodes { id draft { version } versions { version } } } }", key=key))
    assert len(result["agents"]["nodes"]) == 8
    assert api.db.statements_executed - before == (1 if api.path == "compiled" else 3)  # agents page + drafts + versions

    before = api.db.statements_executed
    result = data(await api.gql(AGENTS_WITH_CALLS, key=key))
    assert [len(agent["calls"]["nodes"]) for agent in result["agents"]["nodes"]] == [2] * 8
    if api.path == "compiled":
        assert api.db.statements_executed - before == 1  # a nested page in the same statement
