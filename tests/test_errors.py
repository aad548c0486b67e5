"""Errors reach clients with a code and a message a person understands, never internals."""

from __future__ import annotations

import logging

import asyncpg

from tests.conftest import error_codes
from tests.factories import call, load, voice_agent


async def test_unexpected_failure_is_internal_without_internals_and_logged(api, db_url, caplog) -> None:
    key = await api.key_for("acme")
    await load(api, "acme", [voice_agent(), call("call_1")])
    conn = await asyncpg.connect(dsn=db_url)
    await conn.execute("ALTER TABLE analysis_results RENAME TO analysis_results_gone")
    await conn.close()

    with caplog.at_level(logging.ERROR, logger="graphql_api.errors"):
        result = await api.gql('{ agents { nodes { id } } call(id: "call_1") { id analysis { summary } } }', key=key)
    assert error_codes(result) == ["INTERNAL"]
    message = result["errors"][0]["message"]
    assert "analysis_results" not in message and "SELECT" not in message and ".py" not in message
    assert result["errors"][0]["path"] == ["call"]
    assert result["data"]["agents"]["nodes"] == [{"id": "agent_voice1"}]  # the rest of the answer still arrives
    assert any("unexpected_error" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_syntax_and_validation_errors_are_bad_user_input(api) -> None:
    key = await api.key_for("acme")
    for query in ("{ calls { nodes { id }", "{ calls { nodes { nope } } }", '{ call(id: true) { id } }', "{ call { id } }"):
        result = await api.gql(query, key=key)
        assert error_codes(result) == ["BAD_USER_INPUT"], (query, result)


async def test_variables_of_the_wrong_type_are_bad_user_input(api) -> None:
    key = await api.key_for("acme")
    result = await api.gql("query($n: Int) { calls(first: $n) { nodes { id } } }", {"n": "ten"}, key=key)
    assert error_codes(result) == ["BAD_USER_INPUT"]
