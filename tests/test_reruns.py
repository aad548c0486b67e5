"""rerunAnalysis through the real google-genai client and a Gemini-compatible server on loopback."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest

from graphql_api.testing import ErrorReply
from tests.conftest import data, error_codes, running_api
from tests.factories import call, load, voice_agent
from tests.reruns_helpers import JOB, RERUN, UPDATE, wait_final

FIELDS = [
    {"type": "enum", "name": "visit_type", "description": "Kind of visit", "choices": ["cleaning", "checkup"]},
    {"type": "number", "name": "party_size", "description": "People booked"},
]


def _agent(version: int, published: bool, prompt: str) -> dict:
    return voice_agent(
        version=version,
        published=published,
        model="gemini-2.5-flash-lite",  # free at the initial run, charged at a rerun
        data=[{"type": "system-presets", "name": "call_summary", "description": prompt}, *FIELDS],
    )


RECORDS = [
    _agent(0, True, "Old v0 summary prompt."),
    _agent(1, True, "Old v1 summary prompt."),
    _agent(2, False, "Draft summary prompt."),
] + [call(f"call_{i}", version=i % 2, minute=i) for i in range(8)]


@pytest.fixture
async def gapi(db_url, gemini):
    async with running_api(
        db_url,
        gemini_api_key="test-key",
        gemini_base_url=gemini.base_url,
        gemini_retry_base_delay_s=0.02,
        gemini_max_attempts=3,
        analysis_concurrency=4,
    ) as api:
        api.key = await api.key_for("acme")
        await load(api, "acme", RECORDS, analyzer=api.services.analyzer)
        gemini.clear_requests()
        yield api


async def _until_running(api, job_id: str, *, at_least: int) -> None:
    """Wait until the worker has claimed that many items of the job."""
    query = "query($id: ID!) { rerunJob(id: $id) { items(status: [RUNNING]) { nodes { conversationId } } } }"
    for _ in range(200):
        running = data(await api.gql(query, {"id": job_id}, key=api.key))["rerunJob"]["items"]["nodes"]
        if len(running) >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} items of {job_id} started")


async def _rerun(api, **input) -> dict:
    return data(await api.gql(RERUN, {"input": input}, key=api.key))["rerunAnalysis"]


async def test_rerun_uses_latest_draft_even_for_published_version_calls(gapi, gemini) -> None:
    await gapi.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "NEW: a 1-5 word summary."}}, key=gapi.key)
    payload = await _rerun(gapi, callIds=["call_0", "call_1"])
    assert payload["job"]["configVersion"] == 2 and payload["job"]["config"]["summaryPrompt"] == "NEW: a 1-5 word summary."
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    assert job["status"] == "SUCCEEDED" and (job["succeeded"], job["failed"], job["pending"]) == (2, 0, 0)

    requests = gemini.requests
    assert len(requests) == 2
    for request in requests:
        assert "NEW: a 1-5 word summary." in request.system_instruction
        assert "Old v0" not in request.system_instruction and "Old v1" not in request.system_instruction
        custom = request.response_schema["properties"]["custom_data"]["properties"]
        assert custom["visit_type"]["enum"] == ["cleaning", "checkup"]
        assert request.model == "gemini-2.5-flash-lite"

    calls = data(await gapi.gql(
        """{ calls(filter: {versions: [0]}) { nodes { id agentVersion { version }
             analysis { trigger agentVersion { version } } analysisHistory { trigger agentVersion { version } } } } }""",
        key=gapi.key,
    ))["calls"]["nodes"]
    rerun_call = next(c for c in calls if c["id"] == "call_0")
    assert rerun_call["agentVersion"]["version"] == 0  # handled by version 0 ...
    assert rerun_call["analysis"] == {"trigger": "RERUN", "agentVersion": {"version": 2}}  # ... analyzed with the draft
    assert rerun_call["analysisHistory"] == [{"trigger": "INITIAL", "agentVersion": {"version": 0}}]
    for item in job["items"]["nodes"]:
        assert item["previousResult"]["trigger"] == "INITIAL" and item["result"]["trigger"] == "RERUN"


async def test_editing_the_draft_during_a_rerun_does_not_change_it(gapi, gemini) -> None:
    gemini.delay_s = 0.2
    payload = await _rerun(gapi, agentId="agent_voice1")
    await gapi.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "EDITED DURING THE RUN"}}, key=gapi.key)
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    assert job["status"] == "SUCCEEDED" and job["succeeded"] == 8
    assert job["config"]["summaryPrompt"] == "Draft summary prompt."
    assert len(gemini.requests) == 8
    assert all("Draft summary prompt." in r.system_instruction and "EDITED" not in r.system_instruction for r in gemini.requests)


async def test_rerun_charges_every_item_even_for_models_free_at_the_initial_run(gapi, db_url) -> None:
    before = data(await gapi.gql("{ calls(first: 100) { nodes { analysis { charged costUsd model } } } }", key=gapi.key))
    assert all(n["analysis"]["charged"] is False for n in before["calls"]["nodes"])  # flash-lite: waived initially
    payload = await _rerun(gapi, agentId="agent_voice1")
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    results = [item["result"] for item in job["items"]["nodes"]]
    assert len(results) == 8 and all(r["charged"] and Decimal(r["costUsd"]) > 0 for r in results)
    assert Decimal(job["costUsd"]) == sum(Decimal(r["costUsd"]) for r in results)

    conn = await asyncpg.connect(dsn=db_url)
    try:
        lines = await conn.fetch("SELECT reason, waived, amount_usd FROM charges ORDER BY id")
    finally:
        await conn.close()
    initial = [line for line in lines if line["reason"] == "initial"]
    rerun = [line for line in lines if line["reason"] == "rerun"]
    assert len(initial) == 8 and all(line["waived"] for line in initial)
    assert len(rerun) == 8 and all(not line["waived"] and line["amount_usd"] > 0 for line in rerun)


async def test_dry_run_cost_cap_and_idempotency(gapi) -> None:
    dry = await _rerun(gapi, agentId="agent_voice1", dryRun=True)
    assert dry["job"] is None
    estimate = dry["estimate"]
    assert estimate["conversations"] == 8 and estimate["model"] == "gemini-2.5-flash-lite" and estimate["configVersion"] == 2
    assert Decimal(estimate["costUsd"]) > 0 and estimate["inputTokens"] > 0 and estimate["outputTokens"] > 0
    assert data(await gapi.gql("{ rerunJobs { nodes { id } } }", key=gapi.key))["rerunJobs"]["nodes"] == []

    capped = await gapi.gql(RERUN, {"input": {"agentId": "agent_voice1", "maxCostUsd": "0.000001"}}, key=gapi.key)
    assert error_codes(capped) == ["LIMIT_EXCEEDED"] and "maxCostUsd" in capped["errors"][0]["message"]
    assert data(await gapi.gql("{ rerunJobs { nodes { id } } }", key=gapi.key))["rerunJobs"]["nodes"] == []

    first = await _rerun(gapi, agentId="agent_voice1", idempotencyKey="retry-me", maxCostUsd=estimate["costUsd"])
    again = await _rerun(gapi, agentId="agent_voice1", idempotencyKey="retry-me", maxCostUsd=estimate["costUsd"])
    assert again["job"]["id"] == first["job"]["id"] and again["reused"] is True and first["reused"] is False
    jobs = data(await gapi.gql("{ rerunJobs { nodes { id } } }", key=gapi.key))["rerunJobs"]["nodes"]
    assert [j["id"] for j in jobs] == [first["job"]["id"]]
    other = await gapi.gql(RERUN, {"input": {"callIds": ["call_1"], "idempotencyKey": "retry-me"}}, key=gapi.key)
    assert error_codes(other) == ["CONFLICT"]
    await wait_final(gapi, gapi.key, first["job"]["id"])


async def test_injected_429s_and_500s_end_in_success(gapi, gemini) -> None:
    gemini.fail_next(3, status=429, retry_delay="0.05s")
    payload = await _rerun(gapi, callIds=["call_0", "call_1", "call_2"])
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    assert job["status"] == "SUCCEEDED" and job["succeeded"] == 3
    gemini.clear_requests()
    gemini.fail_next(2, status=500)
    payload = await _rerun(gapi, callIds=["call_3", "call_4"])
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    assert job["status"] == "SUCCEEDED" and job["succeeded"] == 2
    assert len(gemini.requests) == 4  # two failures retried, two successes


async def test_a_persistent_failure_ends_in_failed_items_and_partially_failed(gapi, gemini) -> None:
    def responder(request):
        if "call_3" in request.contents or "FAIL-ME" in request.contents:
            return ErrorReply(500)
        return None

    gemini.responder = responder
    # The transcript of call_3 carries a marker the responder fails on.
    await load(gapi, "acme", [call("call_3", version=1, minute=3, utterances=[{"role": "user", "content": "FAIL-ME please"}])])
    gemini.clear_requests()
    payload = await _rerun(gapi, agentId="agent_voice1")
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    assert job["status"] == "PARTIALLY_FAILED" and (job["succeeded"], job["failed"]) == (7, 1)
    failed = [i for i in job["items"]["nodes"] if i["status"] == "FAILED"]
    assert [i["conversationId"] for i in failed] == ["call_3"]
    assert failed[0]["result"] is None and "500" in failed[0]["error"]
    assert sum(1 for r in gemini.requests if "FAIL-ME" in r.contents) == 3  # GEMINI_MAX_ATTEMPTS

    gemini.responder = lambda request: ErrorReply(400)
    payload = await _rerun(gapi, callIds=["call_0", "call_1"])
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    assert job["status"] == "FAILED" and job["failed"] == 2


async def test_cancel_stops_what_has_not_started(gapi, gemini) -> None:
    gemini.delay_s = 0.4
    payload = await _rerun(gapi, agentId="agent_voice1")
    job_id = payload["job"]["id"]
    await _until_running(gapi, job_id, at_least=1)
    for _ in range(300):  # until an analysis has really started (a claimed item may still be given back)
        if gemini.request_count >= 1:
            break
        await asyncio.sleep(0.01)
    canceled = data(await gapi.gql(
        "mutation($id: ID!) { cancelRerun(jobId: $id) { status canceled succeeded pending } }", {"id": job_id}, key=gapi.key
    ))["cancelRerun"]
    assert canceled["canceled"] > 0
    job = await wait_final(gapi, gapi.key, job_id)
    assert job["status"] == "CANCELED"
    assert job["succeeded"] + job["canceled"] == 8 and job["succeeded"] > 0 and job["pending"] == 0
    for item in job["items"]["nodes"]:
        assert (item["result"] is not None) == (item["status"] == "SUCCEEDED")
    again = await gapi.gql("mutation($id: ID!) { cancelRerun(jobId: $id) { status } }", {"id": job_id}, key=gapi.key)
    assert error_codes(again) == ["CONFLICT"]


async def test_cancel_of_a_finished_job_is_a_conflict(gapi) -> None:
    payload = await _rerun(gapi, callIds=["call_0"])
    await wait_final(gapi, gapi.key, payload["job"]["id"])
    result = await gapi.gql("mutation($id: ID!) { cancelRerun(jobId: $id) { status } }", {"id": payload["job"]["id"]}, key=gapi.key)
    assert error_codes(result) == ["CONFLICT"] and "SUCCEEDED" in result["errors"][0]["message"]


@pytest.mark.parametrize(
    "input, code, fragment",
    [
        ({}, "BAD_USER_INPUT", "Nothing to rerun"),
        ({"callIds": []}, "BAD_USER_INPUT", "empty"),
        ({"callIds": ["call_0"], "agentId": "agent_voice1"}, "BAD_USER_INPUT", "not both"),
        ({"agentId": "agent_voice1", "filter": {"versions": [7]}}, "BAD_USER_INPUT", "matches no"),
        ({"callIds": ["call_0", "call_x1"]}, "NOT_FOUND", "call_x1"),
        ({"chatIds": ["call_0"]}, "NOT_FOUND", "call_0"),
        ({"agentId": "agent_nope"}, "NOT_FOUND", "agent_nope"),
        ({"callIds": ["call_0", "call_other"]}, "BAD_USER_INPUT", "2 agents"),
        ({"agentId": "agent_voice1", "maxCostUsd": "-1"}, "BAD_USER_INPUT", "maxCostUsd"),
    ],
)
async def test_bad_rerun_requests_create_nothing(api, input, code, fragment) -> None:
    key = await api.key_for("acme")
    await load(api, "acme", [voice_agent(), voice_agent("agent_other"), call("call_0"), call("call_other", agent_id="agent_other")])
    result = await api.gql(RERUN, {"input": input}, key=key)
    assert error_codes(result) == [code], result
    assert fragment in result["errors"][0]["message"]
    assert data(await api.gql("{ rerunJobs { nodes { id } } }", key=key))["rerunJobs"]["nodes"] == []


async def test_jobs_of_another_workspace_are_not_found(api) -> None:
    key = await api.key_for("acme")
    other = await api.key_for("globex")
    await load(api, "acme", [voice_agent(), call("call_0")])
    job_id = data(await api.gql(RERUN, {"input": {"callIds": ["call_0"]}}, key=key))["rerunAnalysis"]["job"]["id"]
    assert error_codes(await api.gql(JOB, {"id": job_id}, key=other)) == ["NOT_FOUND"]
    cancel = await api.gql("mutation($id: ID!) { cancelRerun(jobId: $id) { status } }", {"id": job_id}, key=other)
    assert error_codes(cancel) == ["NOT_FOUND"]
    assert error_codes(await api.gql(RERUN, {"input": {"callIds": ["call_0"]}}, key=other)) == ["NOT_FOUND"]
    await wait_final(api, key, job_id)


PREVIEW = """mutation($id: ID!) { previewAnalysis(conversationId: $id) {
  trigger charged costUsd model summary agentVersion { version } } }"""


async def test_preview_runs_the_draft_on_one_call_without_changing_its_analysis(gapi, gemini) -> None:
    await gapi.gql(UPDATE, {"agent": "agent_voice1", "input": {"summaryPrompt": "PREVIEW PROMPT"}}, key=gapi.key)
    preview = data(await gapi.gql(PREVIEW, {"id": "call_0"}, key=gapi.key))["previewAnalysis"]
    assert preview["trigger"] == "PREVIEW" and preview["agentVersion"] == {"version": 2}
    assert preview["charged"] is True and Decimal(preview["costUsd"]) > 0
    assert "PREVIEW PROMPT" in gemini.requests[-1].system_instruction
    call0 = data(await gapi.gql('{ call(id: "call_0") { analysis { trigger } analysisHistory { trigger } } }', key=gapi.key))["call"]
    assert call0 == {"analysis": {"trigger": "INITIAL"}, "analysisHistory": [{"trigger": "PREVIEW"}]}

    gemini.fail_always(400)
    failed = await gapi.gql(PREVIEW, {"id": "call_1"}, key=gapi.key)
    assert error_codes(failed) == ["INTERNAL"] and "analysis model failed" in failed["errors"][0]["message"]
    gemini.fail_always(None)
    assert error_codes(await gapi.gql(PREVIEW, {"id": "call_nope"}, key=gapi.key)) == ["NOT_FOUND"]
    await load(gapi, "acme", [call("call_live", status="ongoing")])
    assert error_codes(await gapi.gql(PREVIEW, {"id": "call_live"}, key=gapi.key)) == ["BAD_USER_INPUT"]


async def test_a_canceled_job_whose_worker_died_still_ends(db_url, gemini) -> None:
    from graphql_api.reruns.worker import RerunWorker

    async with running_api(db_url, run_workers=False) as api:
        key = await api.key_for("acme")
        await load(api, "acme", [voice_agent(), call("call_0"), call("call_1", minute=1)])
        job_id = data(await api.gql(RERUN, {"input": {"agentId": "agent_voice1"}}, key=key))["rerunAnalysis"]["job"]["id"]
        # A worker claims both items and dies: its leases run out and nobody heartbeats them.
        claimed = await api.db.fetch_all("rerun_items_claim", batch=10, owner="dead-worker", lease_s=0.2)
        assert len(claimed) == 2
        canceled = data(await api.gql("mutation($id: ID!) { cancelRerun(jobId: $id) { status canceled } }", {"id": job_id}, key=key))
        assert canceled["cancelRerun"] == {"status": "QUEUED", "canceled": 0}  # nothing pending to cancel yet
        survivor = RerunWorker(db=api.db, analyzer=api.services.analyzer, lease_s=0.6)
        task = asyncio.create_task(survivor.run())
        try:
            job = await wait_final(api, key, job_id, timeout=15)
        finally:
            survivor.stop()
            await task
    assert (job["status"], job["canceled"], job["succeeded"]) == ("CANCELED", 2, 0)
    assert all(item["status"] == "CANCELED" and item["result"] is None for item in job["items"]["nodes"])


async def test_a_cancel_that_catches_nothing_leaves_the_job_succeeded(gapi, gemini) -> None:
    gemini.delay_s = 0.5
    payload = await _rerun(gapi, callIds=["call_0", "call_1", "call_2"])  # all three start at once (concurrency 4)
    for _ in range(300):  # until all three are being analyzed
        if gemini.request_count >= 3:
            break
        await asyncio.sleep(0.01)
    canceled = data(await gapi.gql("mutation($id: ID!) { cancelRerun(jobId: $id) { canceled } }", {"id": payload["job"]["id"]}, key=gapi.key))
    assert canceled["cancelRerun"]["canceled"] == 0
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    assert (job["status"], job["succeeded"], job["canceled"]) == ("SUCCEEDED", 3, 0)


async def test_a_subscriber_arriving_as_the_last_one_leaves_gets_a_live_watch(api) -> None:
    hub = api.services.progress
    async with hub.subscribe(1, "rerun_00000000000000000001"):
        pass
    async with hub.subscribe(1, "rerun_00000000000000000001") as again:
        watch = hub._watches[(1, "rerun_00000000000000000001")]
        assert again in watch.subscribers and not watch.task.done() and not watch.task.cancelling()


async def test_items_leased_by_a_claim_whose_answer_was_lost_are_not_left_waiting(db_url) -> None:
    from graphql_api.reruns.worker import RerunWorker

    async with running_api(db_url, run_workers=False) as api:
        key = await api.key_for("acme")
        await load(api, "acme", [voice_agent(), call("call_0"), call("call_1", minute=1)])
        job_id = data(await api.gql(RERUN, {"input": {"agentId": "agent_voice1"}}, key=key))["rerunAnalysis"]["job"]["id"]
        worker = RerunWorker(db=api.db, analyzer=api.services.analyzer, lease_s=30)
        # The claim went through in the database but its answer never reached the worker.
        await api.db.fetch_all("rerun_items_claim", batch=10, owner=worker.owner, lease_s=30)
        worker._unsure_of_leases = True
        task = asyncio.create_task(worker.run())
        try:
            job = await wait_final(api, key, job_id, timeout=10)  # well before the 30 s leases run out
        finally:
            worker.stop()
            await task
    assert (job["status"], job["succeeded"]) == ("SUCCEEDED", 2)


async def test_a_model_answer_that_fails_still_writes_its_charge_line(gapi, gemini, db_url) -> None:
    gemini.malformed_next(1, mode="enum")  # the model answers (and reports its tokens) with an unusable value
    payload = await _rerun(gapi, callIds=["call_0"])
    job = await wait_final(gapi, gapi.key, payload["job"]["id"])
    assert (job["status"], job["failed"]) == ("FAILED", 1) and job["items"]["nodes"][0]["result"] is None
    gemini.malformed_next(1, mode="text")
    assert error_codes(await gapi.gql(PREVIEW, {"id": "call_1"}, key=gapi.key)) == ["INTERNAL"]
    gemini.fail_always(400)  # refused before the model ran: nothing spent, no line
    assert error_codes(await gapi.gql(PREVIEW, {"id": "call_2"}, key=gapi.key)) == ["INTERNAL"]
    gemini.fail_always(None)

    conn = await asyncpg.connect(dsn=db_url)
    try:
        lines = await conn.fetch(
            "SELECT conversation_id, reason, waived, amount_usd, input_tokens, output_tokens, error FROM charges"
            " WHERE analysis_result_id IS NULL ORDER BY id")
    finally:
        await conn.close()
    assert [(line["conversation_id"], line["reason"], line["waived"]) for line in lines] == [
        ("call_0", "rerun", False), ("call_1", "preview", False)]
    assert all(line["input_tokens"] > 0 and line["amount_usd"] > 0 and "malformed" in line["error"] for line in lines)
    assert Decimal(job["costUsd"]) == lines[0]["amount_usd"]  # the job's cost counts what its failed item spent



async def test_a_double_clicked_rerun_creates_one_job(db_url) -> None:
    async with running_api(db_url, run_workers=False) as api:  # no workers: the first job stays queued
        key = await api.key_for("acme")
        await load(api, "acme", [voice_agent(), call("call_0"), call("call_1", minute=1)])
        twins = await asyncio.gather(*(api.gql(RERUN, {"input": {"agentId": "agent_voice1"}}, key=key) for _ in range(4)))
        created = [r["data"]["rerunAnalysis"]["job"]["id"] for r in twins if r.get("data")]
        assert len(created) == 1
        refused = [r for r in twins if not r.get("data")]
        assert [error_codes(r) for r in refused] == [["CONFLICT"]] * 3
        assert all(r["errors"][0]["extensions"]["jobId"] == created[0] for r in refused)
        # Other targets, or the same ones once the first job is over, are new jobs.
        assert data(await api.gql(RERUN, {"input": {"callIds": ["call_0"]}}, key=key))["rerunAnalysis"]["job"]["id"]
        await api.gql("mutation($id: ID!) { cancelRerun(jobId: $id) { status } }", {"id": created[0]}, key=key)
        again = data(await api.gql(RERUN, {"input": {"agentId": "agent_voice1"}}, key=key))["rerunAnalysis"]["job"]["id"]
        assert again != created[0]
