"""Reruns of only what changed (`fields`, `onlyChanged`): the model is asked for fewer outputs, the new result
carries the others over and records where each came from, the estimate prices the smaller requests and
conversations with nothing to recompute are skipped. Through GraphQL, the real google-genai client against the
Gemini test server, and real PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.conftest import data, error_codes
from tests.factories import call, chat, chat_agent, voice_agent
from tests.reruns_helpers import UPDATE, gemini_api, wait_final

FIELDS = [
    {"type": "system-presets", "name": "call_summary", "description": "Summarize the call in one sentence."},
    {"type": "enum", "name": "visit_type", "description": "Visit", "choices": ["cleaning", "checkup"]},
    {"type": "string", "name": "callback_number", "description": "The number to call back.", "required": True},
]
RECORDS = [
    voice_agent(version=0, published=True, data=FIELDS),
    voice_agent(version=1, published=False, data=FIELDS),
    chat_agent(),
    chat("chat_0"),
] + [call(f"call_{i}", minute=i) for i in range(4)]

RERUN = """mutation($input: RerunAnalysisInput!) {
  rerunAnalysis(input: $input) {
    job { id total skipped targets }
    estimate { conversations skipped inputTokens outputTokens costUsd }
  }
}"""

ITEMS = """query($id: ID!) { rerunJob(id: $id) {
  status total skipped succeeded costUsd
  items(first: 50) { nodes { conversationId status outputs
    previousResult { id summary successful userSentiment inVoicemail customData }
    result { id summary successful userSentiment inVoicemail customData inputTokens outputTokens
             outputSources { output resultId carriedOver } } } }
} }"""


@pytest.fixture
async def gapi(db_url, gemini):
    async with gemini_api(db_url, gemini, RECORDS) as api:
        yield api


async def _rerun(api, **input) -> dict:
    return await api.gql(RERUN, {"input": input}, key=api.key)


async def _run(api, **input) -> dict:
    job = data(await _rerun(api, **input))["rerunAnalysis"]["job"]
    await wait_final(api, api.key, job["id"])
    return data(await api.gql(ITEMS, {"id": job["id"]}, key=api.key))["rerunJob"]


async def _edit(api, **input) -> None:
    data(await api.gql(UPDATE, {"agent": "agent_voice1", "input": input}, key=api.key))


def _properties(request) -> set[str]:
    schema = request.response_schema or {}
    props = set(schema.get("properties", {}))
    custom = schema.get("properties", {}).get("custom_data", {}).get("properties", {})
    return (props - {"custom_data"}) | {f"customData.{name}" for name in custom}


async def test_only_changed_asks_for_the_changed_prompt_and_carries_the_rest(gapi, gemini) -> None:
    # Nothing differs between the draft and the config that produced the initial results: all skipped.
    dry = data(await _rerun(gapi, agentId="agent_voice1", onlyChanged=True, dryRun=True))["rerunAnalysis"]
    assert dry["estimate"]["conversations"] == 0 and dry["estimate"]["skipped"] == 4
    refused = await _rerun(gapi, agentId="agent_voice1", onlyChanged=True)
    assert error_codes(refused) == ["BAD_USER_INPUT"] and refused["errors"][0]["extensions"]["skipped"] == 4
    assert "Nothing to recompute" in refused["errors"][0]["message"] and gemini.requests == []

    await _edit(gapi, summaryPrompt="Summarize the call in five words.")
    full = data(await _rerun(gapi, agentId="agent_voice1", dryRun=True))["rerunAnalysis"]["estimate"]
    narrow = data(await _rerun(gapi, agentId="agent_voice1", onlyChanged=True, dryRun=True))["rerunAnalysis"]["estimate"]
    assert narrow["conversations"] == full["conversations"] == 4 and narrow["skipped"] == 0
    assert narrow["outputTokens"] < full["outputTokens"] and narrow["inputTokens"] < full["inputTokens"]
    assert Decimal(narrow["costUsd"]) < Decimal(full["costUsd"])

    gemini.responder = lambda request: {"summary": "Booked a cleaning visit."}
    job = await _run(gapi, agentId="agent_voice1", onlyChanged=True)
    assert (job["status"], job["total"], job["succeeded"], job["skipped"]) == ("SUCCEEDED", 4, 4, 0)
    # The model was asked for the summary alone, with the new prompt and without the others.
    assert len(gemini.requests) == 4
    for request in gemini.requests:
        assert _properties(request) == {"summary"}
        assert "five words" in request.system_instruction and "callback_number" not in request.system_instruction
        assert "successful (boolean)" not in request.system_instruction
    for item in job["items"]["nodes"]:
        previous, result = item["previousResult"], item["result"]
        assert item["outputs"] == ["summary"]
        assert result["summary"] == "Booked a cleaning visit." != previous["summary"]
        for key in ("successful", "userSentiment", "inVoicemail", "customData"):
            assert result[key] == previous[key], key
        sources = {s["output"]: s for s in result["outputSources"]}
        assert [s["output"] for s in result["outputSources"]] == [
            "summary", "successful", "userSentiment", "inVoicemail", "customData.callback_number", "customData.visit_type"]
        assert sources["summary"] == {"output": "summary", "resultId": result["id"], "carriedOver": False}
        assert all(s["resultId"] == previous["id"] and s["carriedOver"] for name, s in sources.items() if name != "summary")
    # The job charged exactly the smaller requests.
    assert Decimal(job["costUsd"]) > 0
    assert sum(i["result"]["outputTokens"] for i in job["items"]["nodes"]) < 4 * 40  # a summary only

    # Nothing changed since: skipped again; a full rerun still runs everything.
    gemini.reset()
    again = await _rerun(gapi, agentId="agent_voice1", onlyChanged=True)
    assert error_codes(again) == ["BAD_USER_INPUT"]
    full_job = await _run(gapi, callIds=["call_0"])
    assert full_job["items"]["nodes"][0]["outputs"] is None
    assert _properties(gemini.requests[0]) == {
        "summary", "successful", "user_sentiment", "in_voicemail", "customData.callback_number", "customData.visit_type"}
    sources = full_job["items"]["nodes"][0]["result"]["outputSources"]
    assert all(not s["carriedOver"] and s["resultId"] == full_job["items"]["nodes"][0]["result"]["id"] for s in sources)


async def test_provenance_follows_the_run_that_produced_each_output(gapi, gemini) -> None:
    await _edit(gapi, summaryPrompt="Summarize the call in five words.")
    first = await _run(gapi, callIds=["call_1"], onlyChanged=True)
    initial_id = first["items"]["nodes"][0]["previousResult"]["id"]
    first_id = first["items"]["nodes"][0]["result"]["id"]
    # A field changes next: its result carries the summary from the first rerun and the rest from the initial run.
    fields = [f for f in FIELDS if f["type"] != "system-presets"]
    fields[0] = {**fields[0], "description": "The kind of visit booked."}
    await _edit(gapi, dataFields=[{"name": f["name"], "type": f["type"].upper(), "description": f["description"],
                                   "choices": f.get("choices"), "required": f.get("required", False)} for f in fields])
    second = await _run(gapi, callIds=["call_1"], onlyChanged=True)
    item = second["items"]["nodes"][0]
    assert item["outputs"] == ["customData.visit_type"]
    sources = {s["output"]: (s["resultId"], s["carriedOver"]) for s in item["result"]["outputSources"]}
    assert sources["summary"] == (first_id, True)
    assert sources["customData.visit_type"] == (item["result"]["id"], False)
    assert sources["successful"] == sources["customData.callback_number"] == (initial_id, True)


async def test_a_required_field_brings_successful_and_the_rule_holds_over_merged_fields(gapi, gemini) -> None:
    before = data(await gapi.gql('{ call(id: "call_2") { analysis { successful customData } } }', key=gapi.key))
    assert before["call"]["analysis"]["successful"] is True  # the test server answers true and fills strings

    # The model calls it a success but leaves the required field empty.
    gemini.responder = lambda request: {"successful": True, "custom_data": {"callback_number": None}}
    job = await _run(gapi, callIds=["call_2"], fields=["customData.callback_number"])
    item = job["items"]["nodes"][0]
    # successful came along (a required field decides it): the model was asked for both, and the rule made it false.
    assert item["outputs"] == ["customData.callback_number", "successful"]
    assert _properties(gemini.requests[0]) == {"successful", "customData.callback_number"}
    result, previous = item["result"], item["previousResult"]
    assert result["successful"] is False and result["customData"]["callback_number"] is None
    assert result["customData"]["visit_type"] == previous["customData"]["visit_type"]
    assert (result["summary"], result["userSentiment"]) == (previous["summary"], previous["userSentiment"])


async def test_required_rule_applies_when_successful_is_carried(gapi, gemini) -> None:
    # Recompute only visit_type, but with a responder that answers everything asked: successful is carried (true),
    # the required field is carried (filled): the merged result stays successful.
    job = await _run(gapi, callIds=["call_3"], fields=["customData.visit_type"])
    item = job["items"]["nodes"][0]
    assert item["outputs"] == ["customData.visit_type"] and _properties(gemini.requests[0]) == {"customData.visit_type"}
    assert item["result"]["successful"] is True
    assert item["result"]["customData"]["callback_number"] == item["previousResult"]["customData"]["callback_number"]

    # A responder that leaves callback_number empty while successful is asked: the merged result is unsuccessful.
    gemini.clear_requests()
    gemini.responder = lambda request: {"successful": True, "custom_data": {"callback_number": ""}}
    job = await _run(gapi, callIds=["call_3"], fields=["customData.callback_number"])
    result = job["items"]["nodes"][0]["result"]
    assert result["customData"]["callback_number"] == "" and result["successful"] is False
    assert result["customData"]["visit_type"] == item["result"]["customData"]["visit_type"]


async def test_fields_are_checked_against_the_config(gapi, gemini) -> None:
    for fields, needle in (
        (["customData.nope"], "'customData.nope'"),
        (["user_sentiment"], "'user_sentiment'"),
        ([], "`fields` is empty"),
    ):
        refused = await _rerun(gapi, agentId="agent_voice1", fields=fields, dryRun=True)
        assert error_codes(refused) == ["BAD_USER_INPUT"], refused
        assert needle in refused["errors"][0]["message"] and refused["errors"][0]["extensions"]["argument"] == "input.fields"
    chats = await _rerun(gapi, chatIds=["chat_0"], fields=["inVoicemail"], dryRun=True)
    assert error_codes(chats) == ["BAD_USER_INPUT"] and "for chats" in chats["errors"][0]["message"]
    # Narrowed and full requests are different requests: no double-click conflict between them, and the job's
    # targets record what was asked.
    narrow = data(await _rerun(gapi, callIds=["call_0"], fields=["userSentiment"]))["rerunAnalysis"]["job"]
    full = data(await _rerun(gapi, callIds=["call_0"]))["rerunAnalysis"]["job"]
    assert narrow["targets"]["fields"] == ["userSentiment"] and "fields" not in full["targets"]
    await wait_final(gapi, gapi.key, narrow["id"])
    await wait_final(gapi, gapi.key, full["id"])


async def test_a_model_change_recomputes_everything(gapi, gemini) -> None:
    await _edit(gapi, model="gemini-2.5-pro")
    job = await _run(gapi, callIds=["call_0", "call_1"], onlyChanged=True)
    assert [i["outputs"] for i in job["items"]["nodes"]] == [None, None]
    assert all(not s["carriedOver"] for i in job["items"]["nodes"] for s in i["result"]["outputSources"])


def test_a_narrowed_request_sends_and_expects_only_its_outputs() -> None:
    from graphql_api.analysis.base import AnalysisConfig, Conversation, DataField, Utterance
    from graphql_api.analysis.offline import analyze_offline
    from graphql_api.analysis.prompting import build_response_schema, build_system_instruction, estimate_usage, parse_model_output
    from graphql_api.errors import ApiError

    config = AnalysisConfig(model="offline", data_fields=(
        DataField("visit_type", "ENUM", "Visit", choices=("cleaning", "checkup")),
        DataField("callback_number", "STRING", "Number", required=True),
    ))
    narrow = AnalysisConfig(**{**config.__dict__, "outputs": frozenset({"userSentiment", "customData.visit_type"})})
    schema = build_response_schema(narrow, "CALL")
    assert list(schema["properties"]) == ["user_sentiment", "custom_data"]
    assert list(schema["properties"]["custom_data"]["properties"]) == ["visit_type"]
    text = build_system_instruction(narrow, "CALL")
    assert "user_sentiment" in text and "visit_type" in text and "summary" not in text and "callback_number" not in text
    full_in, full_out = estimate_usage(config, "CALL", conversations=10, transcript_chars=4000)
    narrow_in, narrow_out = estimate_usage(narrow, "CALL", conversations=10, transcript_chars=4000)
    assert narrow_in < full_in and narrow_out == (20 + 40) * 10 < full_out == (160 + 80) * 10
    parsed = parse_model_output('{"user_sentiment": "POSITIVE", "custom_data": {"visit_type": "checkup"}}', narrow, "CALL")
    assert parsed == {"summary": None, "successful": None, "user_sentiment": "POSITIVE", "in_voicemail": None,
                      "custom_data": {"visit_type": "checkup"}, "evaluation": None, "rationale": None}
    with pytest.raises(Exception) as missing:
        parse_model_output('{"custom_data": {"visit_type": "checkup"}}', narrow, "CALL")
    assert "user_sentiment" in str(missing.value) and not isinstance(missing.value, ApiError)

    conversation = Conversation(id="c", kind="CALL", transcript="", utterances=(
        Utterance("agent", "Hello, how can I help?"), Utterance("user", "I'd like to book a checkup please, thanks!")))
    whole, part = analyze_offline(conversation, config), analyze_offline(conversation, narrow)
    assert (part.summary, part.successful, part.in_voicemail) == (None, None, None)
    assert part.user_sentiment == whole.user_sentiment and part.custom_data == {"visit_type": whole.custom_data["visit_type"]}
    assert part.input_tokens < whole.input_tokens and part.output_tokens < whole.output_tokens
