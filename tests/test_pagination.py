"""Keyset pagination: newest first, no row twice, none skipped, across pages and filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import data, error_codes
from tests.factories import BASE_MS, call, chat, chat_agent, load, voice_agent


def _at(minute: int) -> str:
    return datetime.fromtimestamp(BASE_MS / 1000 + minute * 60, tz=UTC).isoformat()

PAGE = """query($first: Int, $after: String, $filter: ConversationFilter) {
  calls(first: $first, after: $after, filter: $filter) {
    edges { cursor node { id startedAt agentVersion { version } analysis { successful } } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"""


async def _all_pages(api, key, first, flt=None) -> list[dict]:
    seen, after = [], None
    for _ in range(100):
        conn = data(await api.gql(PAGE, {"first": first, "after": after, "filter": flt}, key=key))["calls"]
        seen.extend(edge["node"] for edge in conn["edges"])
        assert conn["pageInfo"]["hasPreviousPage"] == (after is not None)
        if not conn["pageInfo"]["hasNextPage"]:
            return seen
        after = conn["pageInfo"]["endCursor"]
    raise AssertionError("pagination did not end")


@pytest.fixture
async def many_calls(api):
    key = await api.key_for("acme")
    records = [voice_agent(version=0), voice_agent(version=1), voice_agent(version=2, published=False)]
    # Several calls share a start minute so the id breaks ties; some failed calls are unsuccessful.
    for i in range(53):
        status = "not_connected" if i % 5 == 0 else "ended"
        utterances = [] if status == "not_connected" else None
        extra = {"utterances": utterances} if utterances is not None else {}
        records.append(call(f"call_{i:03d}", version=i % 2, minute=i // 3, status=status, **extra))
    await load(api, "acme", records)
    return key


async def test_pages_cover_every_call_once_in_newest_first_order(api, many_calls) -> None:
    everything = await _all_pages(api, many_calls, first=100)
    assert len(everything) == 53
    for first in (1, 7, 10, 53):
        paged = await _all_pages(api, many_calls, first=first)
        assert [c["id"] for c in paged] == [c["id"] for c in everything]
    keys = [(c["startedAt"], c["id"]) for c in everything]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize(
    "flt, expected",
    [
        ({"versions": [1]}, lambda i: i % 2 == 1),
        ({"status": ["NOT_CONNECTED"]}, lambda i: i % 5 == 0),
        ({"versions": [0], "status": ["ENDED"]}, lambda i: i % 2 == 0 and i % 5 != 0),
        ({"startedAfter": _at(5), "startedBefore": _at(10)}, lambda i: 5 <= i // 3 < 10),
    ],
)
async def test_filtered_pages_cover_exactly_the_matching_calls(api, many_calls, flt, expected) -> None:
    paged = await _all_pages(api, many_calls, first=4, flt=flt)
    assert sorted(c["id"] for c in paged) == sorted(f"call_{i:03d}" for i in range(53) if expected(i))


async def test_filter_by_current_analysis(api, many_calls) -> None:
    unsuccessful = await _all_pages(api, many_calls, first=6, flt={"successful": False})
    assert unsuccessful and all(c["analysis"]["successful"] is False for c in unsuccessful)
    successful = await _all_pages(api, many_calls, first=6, flt={"successful": True})
    assert len(unsuccessful) + len(successful) == 53


async def test_first_zero_gives_an_empty_page_that_knows_more_exist(api, many_calls) -> None:
    conn = data(await api.gql(PAGE, {"first": 0}, key=many_calls))["calls"]
    assert conn["edges"] == [] and conn["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize(
    "variables, fragment",
    [
        ({"first": 101}, "at most 100"),
        ({"first": -1}, "zero or more"),
        ({"after": "not-a-cursor"}, "cursor"),
        ({"after": "WyJhZ2VudCIsIjIwMjUtMTEtMTNUMDA6MDA6MDArMDA6MDAiLCJ4Il0"}, "cursor"),  # an agents cursor
        ({"filter": {"versions": [-1]}}, "versions"),
        ({"filter": {"startedAfter": "2025-11-14T00:00:00Z", "startedBefore": "2025-11-13T00:00:00Z"}}, "before"),
        ({"filter": {"startedAfter": "yesterday"}}, ""),
        ({"filter": {"status": ["SOMETIMES"]}}, ""),
    ],
)
async def test_bad_paging_and_filter_input_is_bad_user_input(api, many_calls, variables, fragment) -> None:
    result = await api.gql(PAGE, variables, key=many_calls)
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    assert fragment in result["errors"][0]["message"]


async def test_chat_statuses_of_calls_are_refused_for_chats(api) -> None:
    key = await api.key_for("acme")
    await load(api, "acme", [chat_agent(), chat("chat_1")])
    result = await api.gql('{ chats(filter: {status: [REGISTERED]}) { nodes { id } } }', key=key)
    assert error_codes(result) == ["BAD_USER_INPUT"]


async def test_agents_paginate_in_creation_order(api) -> None:
    key = await api.key_for("acme")
    await load(api, "acme", [voice_agent(f"agent_{i:02d}") for i in range(12)])
    ids, after = [], None
    while True:
        conn = data(await api.gql(
            "query($after: String) { agents(first: 5, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } } }",
            {"after": after}, key=key,
        ))["agents"]
        ids += [n["id"] for n in conn["nodes"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert sorted(ids) == [f"agent_{i:02d}" for i in range(12)] and len(set(ids)) == 12
