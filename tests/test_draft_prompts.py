"""updateDraftPrompts and publishDraft: drafts change, published versions never do, bad input changes nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from graphql_api.analysis.base import DEFAULT_SUMMARY_PROMPT
from tests.conftest import data, error_codes
from tests.factories import load, voice_agent

VERSION_FIELDS = """version isPublished isLatestDraft configUpdatedAt
  analysisConfig { summaryPrompt summaryPromptIsDefault successfulPrompt successfulPromptIsDefault userSentimentPrompt
                   model dataFields { name type description examples choices required } }"""
UPDATE = f"""mutation($agent: ID!, $input: AnalysisConfigInput!) {{
  updateDraftPrompts(agentId: $agent, input: $input) {{ {VERSION_FIELDS} }} }}"""
AGENT = f"""query($agent: ID!) {{ agent(id: $agent) {{ draft {{ {VERSION_FIELDS} configChanges {{ changedFields }} }}
  versions {{ {VERSION_FIELDS} }} }} }}"""


@pytest.fixture
async def key(api):
    key = await api.key_for("acme")
    await load(api, "acme", [voice_agent(version=0), voice_agent(version=1, published=False)])
    return key


async def _agent(api, key):
    return data(await api.gql(AGENT, {"agent": "agent_voice1"}, key=key))["agent"]


async def test_prompts_round_trip_and_omitted_fields_stay(api, key) -> None:
    fields = [
        {"name": "booked", "type": "BOOLEAN", "description": "Was an appointment booked?"},
        {"name": "visit", "type": "ENUM", "choices": ["cleaning", "checkup"], "required": True, "examples": ["cleaning"]},
        {"name": "party_size", "type": "NUMBER"},
        {"name": "day", "type": "STRING", "examples": ["Tuesday"]},
    ]
    result = data(await api.gql(UPDATE, {"agent": "agent_voice1", "input": {
        "summaryPrompt": "Write a 1-5 word summary of the call.", "dataFields": fields, "model": "gemini-2.5-pro",
    }}, key=key))["updateDraftPrompts"]
    assert result["version"] == 1 and result["isLatestDraft"] and not result["isPublished"]
    config = result["analysisConfig"]
    assert config["summaryPrompt"] == "Write a 1-5 word summary of the call." and not config["summaryPromptIsDefault"]
    assert config["model"] == "gemini-2.5-pro"
    assert [f["name"] for f in config["dataFields"]] == ["booked", "visit", "party_size", "day"]
    assert config["dataFields"][1] == {"name": "visit", "type": "ENUM", "description": "", "examples": ["cleaning"], "choices": ["cleaning", "checkup"], "required": True}

    # Only the successful prompt changes; everything else stays.
    second = data(await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"successfulPrompt": "Booked means success."}}, key=key))
    config2 = second["updateDraftPrompts"]["analysisConfig"]
    assert config2["successfulPrompt"] == "Booked means success."
    assert {k: v for k, v in config2.items() if k not in ("successfulPrompt", "successfulPromptIsDefault")} == {
        k: v for k, v in config.items() if k not in ("successfulPrompt", "successfulPromptIsDefault")
    }
    draft = (await _agent(api, key))["draft"]
    assert draft["analysisConfig"] == config2
    assert [c["changedFields"] for c in draft["configChanges"]] == [["successful_prompt"], ["summary_prompt", "data_fields", "model"]]


async def test_explicit_null_resets_a_prompt_to_the_default(api, key) -> None:
    await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "Short."}}, key=key)
    result = data(await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": None}}, key=key))
    config = result["updateDraftPrompts"]["analysisConfig"]
    assert config["summaryPrompt"] == DEFAULT_SUMMARY_PROMPT and config["summaryPromptIsDefault"] is True


async def test_publish_freezes_the_draft_and_starts_a_copy(api, key) -> None:
    await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "Draft one."}}, key=key)
    published = data(await api.gql('mutation { publishDraft(agentId: "agent_voice1") { version isPublished isLatestDraft agent { draft { version analysisConfig { summaryPrompt } } } } }', key=key))["publishDraft"]
    assert (published["version"], published["isPublished"], published["isLatestDraft"]) == (1, True, False)
    assert published["agent"]["draft"] == {"version": 2, "analysisConfig": {"summaryPrompt": "Draft one."}}

    # Edits now land in version 2; version 1 keeps what it had when published.
    await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "Draft two."}}, key=key)
    versions = {v["version"]: v for v in (await _agent(api, key))["versions"]}
    assert versions[1]["analysisConfig"]["summaryPrompt"] == "Draft one." and versions[1]["isPublished"]
    assert versions[2]["analysisConfig"]["summaryPrompt"] == "Draft two." and versions[2]["isLatestDraft"]
    assert [v["isLatestDraft"] for v in versions.values()].count(True) == 1


@pytest.mark.parametrize(
    "bad_input, argument",
    [
        ({"summaryPrompt": "x" * 4001}, "input.summaryPrompt"),
        ({"summaryPrompt": "   "}, "input.summaryPrompt"),
        ({"model": "gpt-imaginary"}, "input.model"),
        ({"dataFields": [{"name": "a", "type": "ENUM"}]}, "input.dataFields[0].choices"),
        ({"dataFields": [{"name": "a", "type": "ENUM", "choices": []}]}, "input.dataFields[0].choices"),
        ({"dataFields": [{"name": "a", "type": "ENUM", "choices": ["x", "x"]}]}, "input.dataFields[0].choices"),
        ({"dataFields": [{"name": "a", "type": "STRING", "choices": ["x"]}]}, "input.dataFields[0].choices"),
        ({"dataFields": [{"name": "a", "type": "STRING"}, {"name": "a", "type": "NUMBER"}]}, "input.dataFields[1].name"),
        ({"dataFields": [{"name": "has space", "type": "STRING"}]}, "input.dataFields[0].name"),
        ({"dataFields": [{"name": "summary", "type": "STRING"}]}, "input.dataFields[0].name"),
        ({"dataFields": [{"name": f"f{i}", "type": "STRING"} for i in range(51)]}, "input.dataFields"),
        # A valid prompt next to an invalid field: nothing at all is written.
        ({"summaryPrompt": "fine", "dataFields": [{"name": "1bad", "type": "BOOLEAN"}]}, "input.dataFields[0].name"),
    ],
)
async def test_rejected_input_names_the_field_and_leaves_the_draft_unchanged(api, key, bad_input, argument) -> None:
    before = await _agent(api, key)
    result = await api.gql(UPDATE, {"agent": "agent_voice1", "input": bad_input}, key=key)
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    assert result["errors"][0]["extensions"]["argument"] == argument
    assert await _agent(api, key) == before


async def test_a_stale_edit_is_a_conflict(api, key) -> None:
    draft = (await _agent(api, key))["draft"]
    await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "Someone else."}}, key=key)
    result = await api.gql(UPDATE, {"agent": "agent_voice1", "input": {
        "summaryPrompt": "Mine.", "expectedConfigUpdatedAt": draft["configUpdatedAt"]}}, key=key)
    assert error_codes(result) == ["CONFLICT"]
    assert (await _agent(api, key))["draft"]["analysisConfig"]["summaryPrompt"] == "Someone else."


async def test_unknown_or_foreign_agents_are_not_found(api, key) -> None:
    other = await api.key_for("globex")
    for k in (key, other):
        agent = "agent_nope" if k == key else "agent_voice1"
        assert error_codes(await api.gql(UPDATE, {"agent": agent, "input": {"summaryPrompt": "x"}}, key=k)) == ["NOT_FOUND"]
        assert error_codes(await api.gql(f'mutation {{ publishDraft(agentId: "{agent}") {{ version }} }}', key=k)) == ["NOT_FOUND"]
    assert (await _agent(api, key))["draft"]["version"] == 1


PUBLISH = "mutation($agent: ID!, $v: Int, $r: Int) { publishDraft(agentId: $agent, expectedVersion: $v, expectedRevision: $r) { version } }"
DRAFT = 'query { agent(id: "agent_voice1") { draft { version revision configUpdatedAt } versions { version isPublished } } }'


async def test_concurrent_publishes_of_one_draft_publish_it_once(api, key) -> None:
    await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "Ready to ship."}}, key=key)
    results = await asyncio.gather(*(api.gql(PUBLISH, {"agent": "agent_voice1"}, key=key) for _ in range(5)))
    published = [r["data"]["publishDraft"]["version"] for r in results if r.get("data")]
    assert published == [1]
    assert sorted(error_codes(r) for r in results if not r.get("data")) == [["CONFLICT"]] * 4
    agent = data(await api.gql(DRAFT, key=key))["agent"]
    assert [(v["version"], v["isPublished"]) for v in agent["versions"]] == [(2, False), (1, True), (0, True)]


async def test_publishing_a_draft_that_is_an_unchanged_copy_is_a_conflict(api, key) -> None:
    await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "Ready to ship."}}, key=key)
    assert data(await api.gql(PUBLISH, {"agent": "agent_voice1"}, key=key))["publishDraft"]["version"] == 1
    again = await api.gql(PUBLISH, {"agent": "agent_voice1"}, key=key)  # a late double-click
    assert error_codes(again) == ["CONFLICT"] and "nothing new to publish" in again["errors"][0]["message"]
    assert again["errors"][0]["extensions"]["publishedVersion"] == 1
    assert data(await api.gql(DRAFT, key=key))["agent"]["draft"]["version"] == 2


async def test_expected_revision_is_an_exact_token_for_edits_and_publishes(api, key) -> None:
    draft = data(await api.gql(DRAFT, key=key))["agent"]["draft"]
    edit = {"summaryPrompt": "First.", "expectedRevision": draft["revision"]}
    assert data(await api.gql(UPDATE, {"agent": "agent_voice1", "input": edit}, key=key))
    now = data(await api.gql(DRAFT, key=key))["agent"]["draft"]
    assert now["revision"] == draft["revision"] + 1
    stale = await api.gql(UPDATE, {"agent": "agent_voice1", "input": {**edit, "summaryPrompt": "Second."}}, key=key)
    assert error_codes(stale) == ["CONFLICT"] and stale["errors"][0]["extensions"]["revision"] == now["revision"]
    stale_publish = await api.gql(PUBLISH, {"agent": "agent_voice1", "r": draft["revision"]}, key=key)
    assert error_codes(stale_publish) == ["CONFLICT"]
    wrong_version = await api.gql(PUBLISH, {"agent": "agent_voice1", "v": 0, "r": now["revision"]}, key=key)
    assert error_codes(wrong_version) == ["CONFLICT"] and wrong_version["errors"][0]["extensions"]["version"] == 1
    ok = await api.gql(PUBLISH, {"agent": "agent_voice1", "v": 1, "r": now["revision"]}, key=key)
    assert data(ok)["publishDraft"]["version"] == 1
    assert data(await api.gql(DRAFT, key=key))["agent"]["draft"]["revision"] == 1  # a new draft starts at 1


async def test_config_updated_at_cut_to_milliseconds_as_javascript_sends_it_is_accepted(api, key) -> None:
    await api.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "First."}}, key=key)
    stamp = datetime.fromisoformat(data(await api.gql(DRAFT, key=key))["agent"]["draft"]["configUpdatedAt"])
    as_javascript = stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # Date.toISOString()
    edit = {"summaryPrompt": "Second.", "expectedConfigUpdatedAt": as_javascript}
    assert data(await api.gql(UPDATE, {"agent": "agent_voice1", "input": edit}, key=key))
    stale = await api.gql(UPDATE, {"agent": "agent_voice1", "input": {**edit, "summaryPrompt": "Third."}}, key=key)
    assert error_codes(stale) == ["CONFLICT"]
    exact = data(await api.gql(DRAFT, key=key))["agent"]["draft"]["configUpdatedAt"]
    assert data(await api.gql(UPDATE, {"agent": "agent_voice1", "input": {**edit, "expectedConfigUpdatedAt": exact}}, key=key))
