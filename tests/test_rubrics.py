"""Success rubrics and rationale: configs that judge success on a scale or a checklist and ask for reasons grounded
in the transcript; the response schema follows the rubric, results keep the evaluation and the rationale, and
reruns show them next to the results they replace. Through GraphQL (every read checked against the resolvers by
READ_ENGINE_VERIFY), the real google-genai client against the Gemini test server, and real PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from graphql_api.analysis.base import AnalysisConfig, Conversation, Criterion, DataField, SuccessRubric, Utterance
from graphql_api.analysis.offline import analyze_offline
from graphql_api.analysis.prompting import build_response_schema, render_transcript
from tests.conftest import data, error_codes
from tests.factories import call, voice_agent
from tests.reruns_helpers import UPDATE, gemini_api, wait_final

FIELDS = [
    {"type": "system-presets", "name": "call_successful", "description": "The caller booked a visit."},
    {"type": "enum", "name": "visit_type", "description": "Visit", "choices": ["cleaning", "checkup"]},
]
TURNS = [
    {"role": "agent", "content": "Riverside Dental, how can I help?"},
    {"role": "user", "content": "I would like to book a cleaning for Tuesday."},
    {"role": "agent", "content": "You are booked for Tuesday at 2 PM."},
    {"role": "user", "content": "Perfect, thank you so much!"},
]
RECORDS = [voice_agent(version=0, published=True, data=FIELDS), voice_agent(version=1, published=False, data=FIELDS)] + [
    call(f"call_{i}", minute=i, utterances=TURNS) for i in range(3)
]

CONFIG = """query { agent(id: "agent_voice1") { draft { analysisConfig {
  successfulPrompt rationale successRubric { type threshold scaleMin scaleMax criteria { name prompt } } }
  configChanges { changedFields } } } }"""
RERUN = "mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id } estimate { outputTokens costUsd } } }"
RESULTS = """query($id: ID!) { rerunJob(id: $id) { status costUsd items(first: 10) { nodes { conversationId status error
  outputs
  previousResult { successful evaluation { type score } rationale { output reason } }
  result { successful outputTokens inputTokens
    evaluation { type score threshold scaleMin scaleMax verdict level
                 criteria { name verdict rationale { reason quote turn quoteFound } } }
    rationale { output reason quote turn quoteFound } } } } } }"""


@pytest.fixture
async def gapi(db_url, gemini):
    async with gemini_api(db_url, gemini, RECORDS) as api:
        yield api


async def _edit(api, **input) -> dict:
    return await api.gql(UPDATE, {"agent": "agent_voice1", "input": input}, key=api.key)


async def _rerun(api, **input) -> dict:
    payload = data(await api.gql(RERUN, {"input": {"agentId": "agent_voice1", **input}}, key=api.key))["rerunAnalysis"]
    await wait_final(api, api.key, payload["job"]["id"])
    job = data(await api.gql(RESULTS, {"id": payload["job"]["id"]}, key=api.key))["rerunJob"]
    return {**job, "estimate": payload["estimate"]}


def _evaluation_schema(request) -> dict[str, Any]:
    return request.response_schema["properties"]["evaluation"]


RUBRICS = [
    ({"type": "PASS_FAIL"}, {"verdict": "SUCCESS"}, {"type": "PASS_FAIL", "score": 1.0, "threshold": None, "verdict": "SUCCESS"}, True),
    ({"type": "PASS_FAIL"}, {"verdict": "UNKNOWN"}, {"score": None, "verdict": "UNKNOWN"}, None),
    ({"type": "NUMERIC", "scaleMin": 1, "scaleMax": 10, "threshold": 7}, {"score": 8},
     {"score": 8.0, "threshold": 7.0, "scaleMin": 1, "scaleMax": 10}, True),
    ({"type": "NUMERIC", "scaleMin": 1, "scaleMax": 10, "threshold": 7}, {"score": 6}, {"score": 6.0}, False),
    ({"type": "PERCENTAGE", "threshold": 80}, {"score": 79.5}, {"score": 79.5, "threshold": 80.0, "scaleMax": 100}, False),
    ({"type": "LIKERT"}, {"level": "AGREE"}, {"score": 4.0, "threshold": 4.0, "level": "AGREE"}, True),
    ({"type": "LIKERT", "threshold": 5}, {"level": "AGREE"}, {"score": 4.0, "threshold": 5.0}, False),
    ({"type": "CHECKLIST", "threshold": 1, "criteria": [{"name": "greeted", "prompt": "The agent greeted the caller."},
                                                         {"name": "booked", "prompt": "A visit was booked."}]},
     {"criteria": {"greeted": "FAILURE", "booked": "SUCCESS"}}, {"score": 1.0, "threshold": 1.0}, True),
]


@pytest.mark.parametrize("rubric, answer, expected, successful", RUBRICS)
async def test_a_rubric_shapes_the_request_and_decides_success(gapi, gemini, rubric, answer, expected, successful) -> None:
    data(await _edit(gapi, successRubric=rubric))
    gemini.responder = lambda request: {"summary": "s", "evaluation": answer, "user_sentiment": "POSITIVE",
                                        "in_voicemail": False, "custom_data": {"visit_type": "cleaning"}}
    job = await _rerun(gapi)
    assert job["status"] == "SUCCEEDED", job
    request = gemini.requests[0]
    assert "successful" not in request.response_schema["properties"]
    inner = _evaluation_schema(request)["properties"]
    assert set(inner) == {"PASS_FAIL": {"verdict"}, "NUMERIC": {"score"}, "PERCENTAGE": {"score"}, "LIKERT": {"level"},
                          "CHECKLIST": {"criteria"}}[rubric["type"]]
    if rubric["type"] == "NUMERIC":
        assert (inner["score"]["minimum"], inner["score"]["maximum"]) == (1, 10)
    assert "The caller booked a visit." in request.system_instruction
    for item in job["items"]["nodes"]:
        result = item["result"]
        assert result["successful"] is successful
        assert {k: result["evaluation"][k] for k in expected} == expected
        assert item["previousResult"]["evaluation"] is None  # the initial run had no rubric
    if rubric["type"] == "CHECKLIST":
        assert [c["name"] for c in job["items"]["nodes"][0]["result"]["evaluation"]["criteria"]] == ["greeted", "booked"]


async def test_rubrics_are_validated_whole(gapi, gemini) -> None:
    bad = [
        ({"type": "NUMERIC", "threshold": 5}, "successRubric.scaleMin"),
        ({"type": "NUMERIC", "scaleMin": 10, "scaleMax": 1, "threshold": 5}, "successRubric.scaleMin"),
        ({"type": "NUMERIC", "scaleMin": 1, "scaleMax": 10, "threshold": 11}, "successRubric.threshold"),
        ({"type": "PERCENTAGE"}, "successRubric.threshold"),
        ({"type": "PERCENTAGE", "threshold": 150}, "successRubric.threshold"),
        ({"type": "PASS_FAIL", "threshold": 1}, "successRubric.threshold"),
        ({"type": "LIKERT", "threshold": 6}, "successRubric.threshold"),
        ({"type": "LIKERT", "scaleMin": 1, "scaleMax": 5}, "successRubric.scaleMin"),
        ({"type": "CHECKLIST"}, "successRubric.criteria"),
        ({"type": "PASS_FAIL", "criteria": [{"name": "a", "prompt": "b"}]}, "successRubric.criteria"),
        ({"type": "CHECKLIST", "criteria": [{"name": "a", "prompt": "x"}, {"name": "A", "prompt": "y"}]},
         "successRubric.criteria[1].name"),
        ({"type": "CHECKLIST", "criteria": [{"name": "has space", "prompt": "x"}]}, "successRubric.criteria[0].name"),
        ({"type": "CHECKLIST", "criteria": [{"name": "ok", "prompt": "  "}]}, "successRubric.criteria[0].prompt"),
        ({"type": "CHECKLIST", "threshold": 3, "criteria": [{"name": "a", "prompt": "x"}]}, "successRubric.threshold"),
    ]
    before = data(await gapi.gql(CONFIG, key=gapi.key))
    for rubric, argument in bad:
        # All or nothing: the good change beside the bad rubric is not kept either.
        refused = await _edit(gapi, successRubric=rubric, summaryPrompt="Changed")
        assert error_codes(refused) == ["BAD_USER_INPUT"], (rubric, refused)
        assert refused["errors"][0]["extensions"]["argument"] == f"input.{argument}", (rubric, refused)
    assert data(await gapi.gql(CONFIG, key=gapi.key)) == before

    data(await _edit(gapi, successRubric={"type": "NUMERIC", "scaleMin": 1, "scaleMax": 5, "threshold": 4},
                     rationale="EVALUATIONS"))
    draft = data(await gapi.gql(CONFIG, key=gapi.key))["agent"]["draft"]
    assert draft["analysisConfig"]["successRubric"] == {"type": "NUMERIC", "threshold": 4.0, "scaleMin": 1, "scaleMax": 5,
                                                        "criteria": []}
    assert draft["analysisConfig"]["rationale"] == "EVALUATIONS"
    assert set(draft["configChanges"][0]["changedFields"]) == {"success_rubric", "rationale"}
    # null goes back to the yes/no prompt and no rationale.
    data(await _edit(gapi, successRubric=None, rationale=None))
    config = data(await gapi.gql(CONFIG, key=gapi.key))["agent"]["draft"]["analysisConfig"]
    assert (config["successRubric"], config["rationale"]) == (None, "NONE")


async def test_rationale_is_asked_for_stored_grounded_and_shown_against_the_previous_result(gapi, gemini) -> None:
    plain = await _rerun(gapi)
    data(await _edit(gapi, rationale="ALL", successRubric={
        "type": "CHECKLIST", "criteria": [{"name": "booked", "prompt": "A visit was booked."},
                                          {"name": "thanked", "prompt": "The caller thanked the agent."}]}))

    def answer(request):
        return {
            "summary": "Booked a cleaning.", "user_sentiment": "POSITIVE", "in_voicemail": False,
            "evaluation": {"criteria": {"booked": "SUCCESS", "thanked": "SUCCESS"}},
            "custom_data": {"visit_type": "cleaning"},
            "rationale": {
                "criteria": {"booked": {"reason": "The agent confirmed it.", "quote": "You are booked for Tuesday", "turn": 3},
                             "thanked": {"reason": "Thanks at the end.", "quote": "thank you so much", "turn": 4}},
                "user_sentiment": {"reason": "Warm thanks.", "quote": "Perfect, thank you so much!", "turn": 4},
                "custom_data": {"visit_type": {"reason": "Asked for a cleaning.", "quote": "I want a deep clean", "turn": 2}},
            },
        }

    gemini.clear_requests()
    gemini.responder = answer
    explained = await _rerun(gapi)
    request = gemini.requests[0]
    rationale_schema = request.response_schema["properties"]["rationale"]["properties"]
    assert set(rationale_schema) == {"criteria", "user_sentiment", "custom_data"}
    assert set(rationale_schema["criteria"]["properties"]) == {"booked", "thanked"}
    assert "rationale (object)" in request.system_instruction and "criteria.booked" in request.system_instruction
    item = explained["items"]["nodes"][0]
    result = item["result"]
    assert [r["output"] for r in result["rationale"]] == [
        "userSentiment", "criterion.booked", "criterion.thanked", "customData.visit_type"]
    by_output = {r["output"]: r for r in result["rationale"]}
    assert by_output["criterion.booked"] == {"output": "criterion.booked", "reason": "The agent confirmed it.",
                                             "quote": "You are booked for Tuesday", "turn": 3, "quoteFound": True}
    # An invented quote is kept but flagged.
    assert by_output["customData.visit_type"]["quoteFound"] is False
    assert [c["rationale"]["reason"] for c in result["evaluation"]["criteria"]] == ["The agent confirmed it.", "Thanks at the end."]
    assert result["successful"] is True and result["evaluation"]["score"] == 2.0
    assert item["previousResult"]["rationale"] == [] and item["previousResult"]["evaluation"] is None
    # The job's export carries the score, the evaluation and the rationale as stored.
    job_id = data(await gapi.gql("{ rerunJobs(first: 1) { nodes { id } } }", key=gapi.key))["rerunJobs"]["nodes"][0]["id"]
    response = await gapi.client.get(f"/export/jobs/{job_id}?format=jsonl", headers={"Authorization": f"Bearer {gapi.key}"})
    assert response.status_code == 200, response.text
    exported = [json.loads(line) for line in response.text.splitlines()]
    assert [row["evaluation_score"] for row in exported] == [2.0, 2.0, 2.0]
    row = exported[0]
    assert row["evaluation"]["criteria"] == [{"name": "booked", "verdict": "SUCCESS"}, {"name": "thanked", "verdict": "SUCCESS"}]
    assert row["rationale"]["criterion.booked"] == {"reason": "The agent confirmed it.", "quote": "You are booked for Tuesday",
                                                     "turn": 3, "quote_found": True}
    # What the reasons cost: more output tokens for the same conversations, and the estimate says so beforehand.
    tokens = lambda job: sum(i["result"]["outputTokens"] for i in job["items"]["nodes"])  # noqa: E731
    assert tokens(explained) > tokens(plain)
    assert explained["estimate"]["outputTokens"] > plain["estimate"]["outputTokens"]
    assert Decimal(explained["costUsd"]) > Decimal(plain["costUsd"])


async def test_only_changed_follows_rubric_and_rationale_settings(gapi, gemini) -> None:
    await _rerun(gapi)
    # Nothing changed since that full rerun.
    skipped = await gapi.gql(RERUN, {"input": {"agentId": "agent_voice1", "onlyChanged": True}}, key=gapi.key)
    assert error_codes(skipped) == ["BAD_USER_INPUT"]
    data(await _edit(gapi, successRubric={"type": "PASS_FAIL"}))
    job = await _rerun(gapi, onlyChanged=True)
    assert {tuple(i["outputs"]) for i in job["items"]["nodes"]} == {("successful",)}
    assert all(i["result"]["evaluation"]["verdict"] == "SUCCESS" for i in job["items"]["nodes"])
    data(await _edit(gapi, rationale="EVALUATIONS"))
    job = await _rerun(gapi, onlyChanged=True)
    assert {tuple(i["outputs"]) for i in job["items"]["nodes"]} == {("successful", "userSentiment")}
    # ALL adds the custom fields only; the evaluation is carried over untouched meanwhile.
    data(await _edit(gapi, rationale="ALL"))
    gemini.clear_requests()
    job = await _rerun(gapi, onlyChanged=True)
    assert {tuple(i["outputs"]) for i in job["items"]["nodes"]} == {("customData.visit_type",)}
    result = job["items"]["nodes"][0]["result"]
    assert result["evaluation"]["verdict"] == "SUCCESS"
    assert {r["output"] for r in result["rationale"]} == {"successful", "userSentiment", "customData.visit_type"}
    assert set(gemini.requests[0].response_schema["properties"]["rationale"]["properties"]) == {"custom_data"}


async def test_a_score_off_the_scale_is_a_malformed_answer(gapi, gemini) -> None:
    data(await _edit(gapi, successRubric={"type": "NUMERIC", "scaleMin": 1, "scaleMax": 5, "threshold": 4}))
    gemini.responder = lambda request: {"summary": "s", "evaluation": {"score": 9}, "user_sentiment": "POSITIVE",
                                        "in_voicemail": False, "custom_data": {"visit_type": None}}
    job = await _rerun(gapi)
    assert job["status"] == "FAILED"
    assert all("evaluation.score must be within 1..5" in i["error"] for i in job["items"]["nodes"])


@pytest.mark.parametrize("rubric", [
    SuccessRubric("PASS_FAIL"), SuccessRubric("NUMERIC", 7.0, 1, 10), SuccessRubric("PERCENTAGE", 50.0),
    SuccessRubric("LIKERT"), SuccessRubric("CHECKLIST", None, criteria=(
        Criterion("booked", "A visit was booked."), Criterion("refund", "A refund was issued."),
        Criterion("polite", "The agent was polite."))),
])
def test_the_offline_analyzer_answers_every_rubric_with_grounded_reasons(rubric) -> None:
    config = AnalysisConfig(model="offline", success_rubric=rubric, rationale="ALL",
                            data_fields=(DataField("visit_type", "ENUM", "Visit", choices=("cleaning", "checkup")),))
    conversation = Conversation(id="c", kind="CALL", transcript="", utterances=tuple(
        Utterance(t["role"], t["content"]) for t in TURNS))
    outcome = analyze_offline(conversation, config)
    assert outcome.evaluation["type"] == rubric.type and outcome.successful is not None
    assert set(build_response_schema(config, "CALL")["properties"]) >= {"evaluation", "rationale"}
    text = render_transcript(conversation)
    for output, reason in outcome.rationale.items():
        assert reason["reason"]
        if reason["quote"] is not None:
            assert reason["quote"] in text and reason["quote_found"] is True, output
            assert reason["quote"] in text.splitlines()[reason["turn"] - 1]
    if rubric.type == "CHECKLIST":
        assert [c["verdict"] for c in outcome.evaluation["criteria"]] == ["SUCCESS", "FAILURE", "UNKNOWN"]
        assert set(outcome.rationale) == {"criterion.booked", "criterion.refund", "criterion.polite", "userSentiment",
                                          "customData.visit_type"}
    assert analyze_offline(conversation, config) == outcome  # deterministic
