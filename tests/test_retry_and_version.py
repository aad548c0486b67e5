"""retryRerun (a finished job's failed or canceled items, again, with its snapshot) and rerunAnalysis with a
published version's config (configVersion), through GraphQL, the real google-genai client and real PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from graphql_api.testing import ErrorReply
from tests.conftest import data, error_codes
from tests.factories import call, voice_agent
from tests.reruns_helpers import RERUN, UPDATE, gemini_api, wait_final


def _agent(version: int, published: bool, prompt: str, model: str) -> dict:
    return voice_agent(
        version=version, published=published, model=model,
        data=[{"type": "system-presets", "name": "call_summary", "description": prompt}],
    )


RECORDS = [
    _agent(0, True, "V0 summary prompt.", "gemini-2.0-flash"),
    _agent(1, True, "V1 summary prompt.", "gemini-2.5-pro"),
    _agent(2, False, "Draft summary prompt.", "gemini-2.5-flash-lite"),
] + [
    # call_1 and call_3 carry a marker the model server fails on while a test wants failures.
    call(f"call_{i}", version=i % 2, minute=i, **({"utterances": [{"role": "user", "content": "FAIL-ME"}]} if i in (1, 3) else {}))
    for i in range(6)
]

RETRY = """mutation($job: ID!, $statuses: [RerunItemStatus!], $key: String) {
  retryRerun(jobId: $job, statuses: $statuses, idempotencyKey: $key) {
    reused
    job { id status total configVersion configSource config { summaryPrompt model } targets retryOf { id } }
    estimate { conversations model configVersion configSource costUsd }
  }
}"""

LINKS = """query($id: ID!) { rerunJob(id: $id) {
  id status configVersion configSource retryOf { id status configSource } retries { id targets retryOf { id } }
  items(first: 100) { nodes { conversationId status result { model agentVersion { version } } } }
} }"""


class Failing:
    """The model server's answer: a 400 (not retried) for the marked conversations while on."""

    def __init__(self) -> None:
        self.on = True

    def __call__(self, request):
        return ErrorReply(400) if self.on and "FAIL-ME" in request.contents else None


@pytest.fixture
async def gapi(db_url, gemini):
    async with gemini_api(db_url, gemini, RECORDS) as api:
        yield api


async def _rerun(api, **input) -> dict:
    return data(await api.gql(RERUN, {"input": input}, key=api.key))["rerunAnalysis"]


async def _retry(api, job_id: str, **variables) -> dict:
    return await api.gql(RETRY, {"job": job_id, **variables}, key=api.key)


async def _links(api, job_id: str) -> dict:
    return data(await api.gql(LINKS, {"id": job_id}, key=api.key))["rerunJob"]


async def _partially_failed_job(api, gemini) -> str:
    gemini.responder = failing = Failing()
    job = await wait_final(api, api.key, (await _rerun(api, agentId="agent_voice1"))["job"]["id"])
    assert (job["status"], job["succeeded"], job["failed"]) == ("PARTIALLY_FAILED", 4, 2)
    failing.on = False
    gemini.clear_requests()
    return job["id"]


async def test_retry_reruns_exactly_the_failed_items_with_the_first_jobs_snapshot(gapi, gemini) -> None:
    first = await _partially_failed_job(gapi, gemini)
    # The draft changes after the first job: the retry still runs the first job's snapshot.
    await gapi.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "EDITED AFTER", "model": "gemini-2.5-flash"}},
                   key=gapi.key)

    payload = data(await _retry(gapi, first))["retryRerun"]
    retry = payload["job"]
    assert payload["reused"] is False and retry["total"] == 2 and retry["retryOf"] == {"id": first}
    assert retry["config"] == {"summaryPrompt": "Draft summary prompt.", "model": "gemini-2.5-flash-lite"}
    assert (retry["configVersion"], retry["configSource"]) == (2, "DRAFT")
    assert retry["targets"] == {"retryOf": first, "statuses": ["CANCELED", "FAILED"]}
    estimate = payload["estimate"]
    assert estimate["conversations"] == 2 and estimate["model"] == "gemini-2.5-flash-lite" and Decimal(estimate["costUsd"]) > 0

    done = await wait_final(gapi, gapi.key, retry["id"])
    assert (done["status"], done["succeeded"], done["failed"]) == ("SUCCEEDED", 2, 0)
    assert [i["conversationId"] for i in done["items"]["nodes"]] == ["call_3", "call_1"]  # the first job's order
    assert all(i["previousResult"]["trigger"] == "INITIAL" and i["result"]["model"] == "gemini-2.5-flash-lite"
               for i in done["items"]["nodes"])
    assert len(gemini.requests) == 2
    assert all("Draft summary prompt." in r.system_instruction and "EDITED" not in r.system_instruction
               for r in gemini.requests)

    # Linked both ways, through the compiled path and (READ_ENGINE_VERIFY) the resolvers.
    original = await _links(gapi, first)
    assert original["retryOf"] is None
    assert original["retries"] == [{"id": retry["id"], "targets": retry["targets"], "retryOf": {"id": first}}]
    again = await _links(gapi, retry["id"])
    assert again["retryOf"] == {"id": first, "status": "PARTIALLY_FAILED", "configSource": "DRAFT"} and again["retries"] == []
    # Retrying twice gives two retries, newest first.
    second = data(await _retry(gapi, first, statuses=["FAILED"]))["retryRerun"]["job"]["id"]
    await wait_final(gapi, gapi.key, second)
    assert [r["id"] for r in (await _links(gapi, first))["retries"]] == [second, retry["id"]]
    listing = data(await gapi.gql("{ rerunJobs { nodes { id retryOf { id } retries { id } } } }", key=gapi.key))
    assert {j["id"]: j["retryOf"] for j in listing["rerunJobs"]["nodes"]}[second] == {"id": first}


async def test_retry_refusals_and_idempotency(gapi, gemini) -> None:
    first = await _partially_failed_job(gapi, gemini)
    for statuses in (["SUCCEEDED"], ["PENDING", "FAILED"], ["RUNNING"], []):
        refused = await _retry(gapi, first, statuses=statuses)
        assert error_codes(refused) == ["BAD_USER_INPUT"], refused
        assert refused["errors"][0]["extensions"]["argument"] == "statuses"
    assert "SUCCEEDED ones have their result" in (await _retry(gapi, first, statuses=["SUCCEEDED"]))["errors"][0]["message"]
    none = await _retry(gapi, first, statuses=["CANCELED"])
    assert error_codes(none) == ["BAD_USER_INPUT"] and "no CANCELED items" in none["errors"][0]["message"]

    # Unknown and foreign ids answer alike.
    other_key = await gapi.key_for("other")
    unknown = await _retry(gapi, "rerun_00000000000000000000")
    foreign = await gapi.gql(RETRY, {"job": first}, key=other_key)
    assert error_codes(unknown) == error_codes(foreign) == ["NOT_FOUND"]
    assert unknown["errors"][0]["message"].replace("rerun_00000000000000000000", first) == foreign["errors"][0]["message"]

    # Idempotency: the same key gives the same job back; the key with another request is a conflict.
    gemini.delay_s = 0.3  # the retry runs long enough for the double-click below
    made = data(await _retry(gapi, first, key="retry-1"))["retryRerun"]
    reused = data(await _retry(gapi, first, key="retry-1"))["retryRerun"]
    assert made["reused"] is False and reused["reused"] is True and reused["job"]["id"] == made["job"]["id"]
    other = await _retry(gapi, first, key="retry-1", statuses=["FAILED"])
    assert error_codes(other) == ["CONFLICT"]
    # Without a key, a double-click while the same retry runs is refused.
    clicked = await _retry(gapi, first, statuses=["FAILED", "CANCELED"])
    assert error_codes(clicked) == ["CONFLICT"] and made["job"]["id"] in clicked["errors"][0]["message"]

    # A job that has not ended can't be retried; once canceled, its canceled items can.
    running = (await _rerun(gapi, agentId="agent_voice1"))["job"]["id"]
    conflict = await _retry(gapi, running)
    assert error_codes(conflict) == ["CONFLICT"] and conflict["errors"][0]["extensions"]["status"] in ("QUEUED", "RUNNING")
    data(await gapi.gql("mutation($id: ID!) { cancelRerun(jobId: $id) { id } }", {"id": running}, key=gapi.key))
    canceled = await wait_final(gapi, gapi.key, running)
    gemini.delay_s = 0
    await wait_final(gapi, gapi.key, made["job"]["id"])
    retried = data(await _retry(gapi, running, statuses=["CANCELED"]))["retryRerun"]["job"]
    assert retried["total"] == canceled["canceled"] > 0
    assert (await wait_final(gapi, gapi.key, retried["id"]))["status"] == "SUCCEEDED"


async def test_rerun_with_a_published_version_uses_its_config_and_records_it(gapi, gemini) -> None:
    payload = await _rerun(gapi, callIds=["call_0", "call_2"], configVersion=1)
    job, estimate = payload["job"], payload["estimate"]
    assert (job["configVersion"], job["config"]) == (1, {"summaryPrompt": "V1 summary prompt.", "model": "gemini-2.5-pro"})
    assert (estimate["model"], estimate["configVersion"]) == ("gemini-2.5-pro", 1)
    done = await wait_final(gapi, gapi.key, job["id"])
    assert done["status"] == "SUCCEEDED"
    assert {(i["result"]["model"], i["result"]["agentVersion"]["version"]) for i in done["items"]["nodes"]} == {("gemini-2.5-pro", 1)}
    assert [r.model for r in gemini.requests] == ["gemini-2.5-pro"] * 2
    assert all("V1 summary prompt." in r.system_instruction for r in gemini.requests)
    links = await _links(gapi, job["id"])
    assert (links["configVersion"], links["configSource"]) == (1, "PUBLISHED")
    current = data(await gapi.gql('{ call(id: "call_0") { analysis { trigger model agentVersion { version isPublished } } } }',
                                  key=gapi.key))["call"]["analysis"]
    assert current == {"trigger": "RERUN", "model": "gemini-2.5-pro", "agentVersion": {"version": 1, "isPublished": True}}

    # The default stays the latest draft.
    dry = data(await gapi.gql(RERUN.replace("configVersion }", "configVersion configSource }"),
                              {"input": {"agentId": "agent_voice1", "dryRun": True}}, key=gapi.key))["rerunAnalysis"]
    assert (dry["estimate"]["configVersion"], dry["estimate"]["configSource"], dry["estimate"]["model"]) == (
        2, "DRAFT", "gemini-2.5-flash-lite")
    draft_job = (await _rerun(gapi, callIds=["call_4"]))["job"]
    assert (draft_job["configVersion"], draft_job["config"]["summaryPrompt"]) == (2, "Draft summary prompt.")
    assert (await _links(gapi, draft_job["id"]))["configSource"] == "DRAFT"
    # Another published version prices with its own model.
    v0 = await _rerun(gapi, agentId="agent_voice1", configVersion=0, dryRun=True)
    assert (v0["estimate"]["model"], v0["estimate"]["configVersion"]) == ("gemini-2.0-flash", 0)

    # A retry of a published-version job keeps that version.
    gemini.responder = Failing()
    failed_job = await wait_final(gapi, gapi.key, (await _rerun(gapi, callIds=["call_1"], configVersion=1))["job"]["id"])
    assert failed_job["status"] == "FAILED"
    gemini.responder = None
    retried = data(await _retry(gapi, failed_job["id"]))["retryRerun"]
    assert (retried["job"]["configVersion"], retried["job"]["configSource"]) == (1, "PUBLISHED")
    assert (retried["estimate"]["configSource"], retried["estimate"]["model"]) == ("PUBLISHED", "gemini-2.5-pro")
    await wait_final(gapi, gapi.key, retried["job"]["id"])


async def test_config_version_refusals_and_idempotency(gapi) -> None:
    missing = await gapi.gql(RERUN, {"input": {"agentId": "agent_voice1", "configVersion": 9}}, key=gapi.key)
    assert error_codes(missing) == ["NOT_FOUND"] and "no version 9" in missing["errors"][0]["message"]
    for version in (2, -1):  # the latest draft's own number; not a version
        refused = await gapi.gql(RERUN, {"input": {"agentId": "agent_voice1", "configVersion": version}}, key=gapi.key)
        assert error_codes(refused) == ["BAD_USER_INPUT"], refused
        assert refused["errors"][0]["extensions"]["argument"] == "input.configVersion"
        assert ("latest draft" in refused["errors"][0]["message"]) == (version == 2)
    assert data(await gapi.gql("{ rerunJobs { nodes { id } } }", key=gapi.key))["rerunJobs"]["nodes"] == []

    made = await _rerun(gapi, callIds=["call_0"], configVersion=1, idempotencyKey="v-1")
    again = await _rerun(gapi, callIds=["call_0"], configVersion=1, idempotencyKey="v-1")
    assert again["reused"] is True and again["job"]["id"] == made["job"]["id"]
    for other in ({"configVersion": 0}, {}):  # the version is part of the request
        conflict = await gapi.gql(RERUN, {"input": {"callIds": ["call_0"], "idempotencyKey": "v-1", **other}}, key=gapi.key)
        assert error_codes(conflict) == ["CONFLICT"], conflict
    # The same targets with the draft are another request, not a double-click of the version's.
    assert (await _rerun(gapi, callIds=["call_0"]))["job"]["configVersion"] == 2
