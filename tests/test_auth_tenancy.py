"""Every request needs an API key, and a key sees only its own workspace."""

from __future__ import annotations

from tests.conftest import data, error_codes
from tests.factories import call, chat, chat_agent, load, voice_agent

LIST_ALL = "{ agents { nodes { id } } calls { nodes { id } } chats { nodes { id } } }"


async def test_no_key_wrong_key_and_malformed_header_are_unauthenticated_before_parsing(api) -> None:
    await api.key_for("acme")
    # Not even a document: without a valid key, nothing of the request is looked at.
    for headers in ({}, {"Authorization": "Bearer ak_not_a_real_key"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        for body in ({"query": "{ agents { nodes { id } } }"}, {"query": "{ this is not graphql"}):
            response = await api.client.post("/graphql", json=body, headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
            answer = response.json()
            assert "data" not in answer and error_codes(answer) == ["UNAUTHENTICATED"], answer
            assert "Bearer" in answer["errors"][0]["message"] or "not valid" in answer["errors"][0]["message"]


async def test_schema_introspection_needs_a_key_like_everything_else(api) -> None:
    response = await api.client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})
    assert response.status_code == 401 and error_codes(response.json()) == ["UNAUTHENTICATED"]
    key = await api.key_for("acme")
    result = await api.gql("{ __schema { queryType { name } } }", key=key)
    assert data(result)["__schema"]["queryType"]["name"] == "Query"


async def test_second_workspace_sees_nothing_of_the_first(api) -> None:
    key_a = await api.key_for("acme")
    key_b = await api.key_for("globex")
    await load(api, "acme", [voice_agent(), chat_agent(), call("call_a1"), chat("chat_a1")])

    seen_by_a = data(await api.gql(LIST_ALL, key=key_a))
    assert [n["id"] for n in seen_by_a["calls"]["nodes"]] == ["call_a1"]
    assert [n["id"] for n in seen_by_a["chats"]["nodes"]] == ["chat_a1"]
    assert {n["id"] for n in seen_by_a["agents"]["nodes"]} == {"agent_voice1", "agent_chat1"}

    seen_by_b = data(await api.gql(LIST_ALL, key=key_b))
    assert seen_by_b == {"agents": {"nodes": []}, "calls": {"nodes": []}, "chats": {"nodes": []}}


async def test_ids_of_another_workspace_are_not_found(api) -> None:
    await api.key_for("acme")
    key_b = await api.key_for("globex")
    await load(api, "acme", [voice_agent(), chat_agent(), call("call_a1"), chat("chat_a1")])
    for query, variables in (
        ("query($id: ID!) { agent(id: $id) { id } }", {"id": "agent_voice1"}),
        ("query($id: ID!) { call(id: $id) { id } }", {"id": "call_a1"}),
        ("query($id: ID!) { chat(id: $id) { id } }", {"id": "chat_a1"}),
        ("query($id: ID!) { calls(filter: {agentId: $id}) { nodes { id } } }", {"id": "agent_voice1"}),
    ):
        result = await api.gql(query, variables, key=key_b)
        assert error_codes(result) == ["NOT_FOUND"], (query, result)
        assert "agent_voice1" in result["errors"][0]["message"] or variables["id"] in result["errors"][0]["message"]


async def test_a_call_id_asked_as_a_chat_is_not_found(api) -> None:
    key = await api.key_for("acme")
    await load(api, "acme", [voice_agent(), call("call_a1")])
    assert error_codes(await api.gql('{ chat(id: "call_a1") { id } }', key=key)) == ["NOT_FOUND"]
    assert data(await api.gql('{ call(id: "call_a1") { id } }', key=key))["call"]["id"] == "call_a1"
