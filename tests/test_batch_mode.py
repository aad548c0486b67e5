"""Batch mode (`mode: BATCH`): a rerun's requests go through the Gemini Batch API at the batch price, the job follows
its batches (polled), results and charges are recorded as for interactive runs, cancel cancels the batches, and an
expired or partly failed batch leaves a correct job whose failed items a retry runs again. Through GraphQL, the real
google-genai client against the Gemini test server's batch endpoints, and real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import asyncpg
import pytest

from graphql_api.analysis.pricing import cost_usd
from tests.conftest import data, error_codes, running_api
from tests.factories import call, load, voice_agent
from tests.reruns_helpers import gemini_api, wait_final

RECORDS = [voice_agent(version=0, published=True), voice_agent(version=1, published=False)] + [
    # call_1 carries a marker the model fails on when a test asks for it.
    call(f"call_{i}", minute=i, **({"utterances": [{"role": "user", "content": "FAIL-ME please"}]} if i == 1 else {}))
    for i in range(5)
]

RERUN = """mutation($input: RerunAnalysisInput!) {
  rerunAnalysis(input: $input) {
    job { id mode total status }
    estimate { conversations inputTokens outputTokens costUsd mode }
  }
}"""

JOB = """query($id: ID!) { rerunJob(id: $id) {
  id mode status total succeeded failed canceled costUsd estimatedCostUsd
  batches { name providerName state items recorded error }
  items(first: 50) { nodes { conversationId status error attempts
    result { id trigger model costUsd inputTokens outputTokens } } }
} }"""

SETTINGS = {"batch_poll_s": 0.05, "batch_max_requests": 2}


@pytest.fixture
async def gapi(db_url, gemini):
    async with gemini_api(db_url, gemini, RECORDS, **SETTINGS) as api:
        yield api


async def _start(api, **input) -> dict:
    return data(await api.gql(RERUN, {"input": input}, key=api.key))["rerunAnalysis"]


async def _job(api, job_id: str) -> dict:
    return data(await api.gql(JOB, {"id": job_id}, key=api.key))["rerunJob"]


async def _until(api, job_id: str, check, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = await _job(api, job_id)
        if check(job):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_a_batch_rerun_costs_half_and_records_results_like_an_interactive_one(gapi, gemini) -> None:
    targets = {"callIds": [f"call_{i}" for i in (0, 2, 3, 4)]}
    interactive = (await _start(gapi, **targets, dryRun=True))["estimate"]
    batch = (await _start(gapi, **targets, mode="BATCH", dryRun=True))["estimate"]
    assert batch["mode"] == "BATCH" and interactive["mode"] == "INTERACTIVE"
    assert (batch["inputTokens"], batch["outputTokens"]) == (interactive["inputTokens"], interactive["outputTokens"])
    assert Decimal(batch["costUsd"]) == cost_usd("gemini-2.5-flash", batch["inputTokens"], batch["outputTokens"], batch=True)
    assert abs(Decimal(batch["costUsd"]) * 2 - Decimal(interactive["costUsd"])) <= Decimal("0.00000002")

    started = await _start(gapi, **targets, mode="BATCH")
    assert (started["job"]["mode"], started["job"]["total"]) == ("BATCH", 4)
    job = await wait_final(gapi, gapi.key, started["job"]["id"])
    assert (job["status"], job["succeeded"], job["failed"]) == ("SUCCEEDED", 4, 0)
    full = await _job(gapi, job["id"])
    # Two batches of two (BATCH_MAX_REQUESTS), both answered and recorded.
    assert [(b["name"], b["items"], b["state"], b["recorded"]) for b in full["batches"]] == [
        (f"{job['id']}-1", 2, "SUCCEEDED", True), (f"{job['id']}-2", 2, "SUCCEEDED", True)]
    assert all(b["providerName"].startswith("batches/") for b in full["batches"])
    # Every request went through the batch endpoints, none through generateContent.
    assert gemini.batches_created == 2 and len(gemini.requests) == 4
    assert all(r.batch is not None for r in gemini.requests)
    total = Decimal(0)
    for item in full["items"]["nodes"]:
        result = item["result"]
        assert item["status"] == "SUCCEEDED" and result["trigger"] == "RERUN" and result["model"] == "gemini-2.5-flash"
        # Charged at the batch price for the tokens the batch reported.
        assert Decimal(result["costUsd"]) == cost_usd("gemini-2.5-flash", result["inputTokens"], result["outputTokens"], batch=True)
        total += Decimal(result["costUsd"])
    assert Decimal(full["costUsd"]) == total > 0

    # The same conversations interactively: the same tokens, twice the cost.
    gemini.clear_requests()
    again = await wait_final(gapi, gapi.key, (await _start(gapi, **targets))["job"]["id"])
    again = await _job(gapi, again["id"])
    assert again["mode"] == "INTERACTIVE" and again["batches"] == []
    assert all(r.batch is None for r in gemini.requests)
    tokens = lambda j: sorted((i["result"]["inputTokens"], i["result"]["outputTokens"]) for i in j["items"]["nodes"])  # noqa: E731
    assert tokens(again) == tokens(full)
    assert Decimal(again["costUsd"]) == sum(
        cost_usd("gemini-2.5-flash", i, o) for i, o in tokens(again)) and Decimal(again["costUsd"]) > Decimal(full["costUsd"])


async def test_cancel_cancels_the_batch_at_the_provider(gapi, gemini) -> None:
    gemini.hold_batches()
    started = await _start(gapi, agentId="agent_voice1", mode="BATCH")
    job_id = started["job"]["id"]
    await _until(gapi, job_id, lambda j: j["batches"] and all(b["providerName"] for b in j["batches"])
                 and len(j["batches"]) == 3)
    running = await _job(gapi, job_id)
    assert running["status"] == "RUNNING" and {b["state"] for b in running["batches"]} <= {"PENDING", "RUNNING"}
    data(await gapi.gql("mutation($id: ID!) { cancelRerun(jobId: $id) { id } }", {"id": job_id}, key=gapi.key))
    job = await wait_final(gapi, gapi.key, job_id)
    assert (job["status"], job["canceled"], job["succeeded"], job["failed"]) == ("CANCELED", 5, 0, 0)
    assert gemini.batches_cancelled == 3
    assert {b["state"] for b in (await _job(gapi, job_id))["batches"]} == {"CANCELLED"}
    assert Decimal(job["costUsd"]) == 0


async def test_an_expired_batch_fails_its_items_and_a_retry_runs_them_again(gapi, gemini) -> None:
    gemini.expire_next_batch()
    started = await _start(gapi, agentId="agent_voice1", mode="BATCH")
    job = await wait_final(gapi, gapi.key, started["job"]["id"])
    assert (job["status"], job["succeeded"], job["failed"]) == ("PARTIALLY_FAILED", 3, 2)
    full = await _job(gapi, job["id"])
    assert [b["state"] for b in full["batches"]] == ["EXPIRED", "SUCCEEDED", "SUCCEEDED"]
    failed = [i for i in full["items"]["nodes"] if i["status"] == "FAILED"]
    assert all("expired" in i["error"] and "retryRerun" in i["error"] and i["result"] is None for i in failed)

    retry = data(await gapi.gql("mutation($id: ID!) { retryRerun(jobId: $id, statuses: [FAILED]) { job { id mode total } "
                                "estimate { mode } } }", {"id": job["id"]}, key=gapi.key))["retryRerun"]
    assert (retry["job"]["mode"], retry["job"]["total"], retry["estimate"]["mode"]) == ("BATCH", 2, "BATCH")
    done = await wait_final(gapi, gapi.key, retry["job"]["id"])
    assert (done["status"], done["succeeded"]) == ("SUCCEEDED", 2)


async def test_a_request_failing_inside_a_batch_fails_only_its_item(gapi, gemini) -> None:
    from graphql_api.testing import ErrorReply

    gemini.responder = lambda request: ErrorReply(400, "bad request") if "FAIL-ME" in request.contents else None
    job = await wait_final(gapi, gapi.key, (await _start(gapi, agentId="agent_voice1", mode="BATCH"))["job"]["id"])
    assert (job["status"], job["succeeded"], job["failed"]) == ("PARTIALLY_FAILED", 4, 1)
    [failed] = [i for i in job["items"]["nodes"] if i["status"] == "FAILED"]
    assert failed["conversationId"] == "call_1" and failed["result"] is None and "400" in failed["error"]


async def test_a_whole_batch_failing_fails_its_items_without_charge(gapi, gemini) -> None:
    gemini.fail_next_batch("the batch could not run")
    job = await wait_final(gapi, gapi.key, (await _start(gapi, callIds=["call_0", "call_2"], mode="BATCH"))["job"]["id"])
    assert (job["status"], job["failed"]) == ("FAILED", 2) and Decimal(job["costUsd"]) == 0
    assert all("failed" in i["error"] for i in job["items"]["nodes"])


async def test_batch_mode_without_a_key_uses_the_offline_analyzer(db_url) -> None:
    async with running_api(db_url, **SETTINGS) as api:
        key = await api.key_for("acme")
        await load(api, "acme", RECORDS)
        started = data(await api.gql(RERUN, {"input": {"agentId": "agent_voice1", "mode": "BATCH"}}, key=key))["rerunAnalysis"]
        job = await wait_final(api, key, started["job"]["id"])
        assert (job["status"], job["succeeded"]) == ("SUCCEEDED", 5)
        batches = data(await api.gql(JOB, {"id": job["id"]}, key=key))["rerunJob"]["batches"]
        assert len(batches) == 3 and all(b["providerName"].startswith("offline-batches/") for b in batches)
        refused = await api.gql(RERUN, {"input": {"agentId": "agent_voice1", "mode": "FAST"}}, key=key)
        assert error_codes(refused) == ["BAD_USER_INPUT"] or refused.get("errors")


async def test_a_runner_dying_mid_submit_never_pays_twice(db_url, gemini) -> None:
    from graphql_api.analysis.batch import GeminiBatchClient
    from graphql_api.reruns.batches import BatchRunner

    class DiesAfterSending(GeminiBatchClient):
        async def submit(self, requests, *, display_name):
            await super().submit(requests, display_name=display_name)
            raise RuntimeError("the process died before it could record the batch")

    async with gemini_api(db_url, gemini, RECORDS, run_workers=False, **SETTINGS) as api:
        job_id = (await _start(api, callIds=["call_0", "call_2"], mode="BATCH"))["job"]["id"]
        first = BatchRunner(db=api.db, client=DiesAfterSending("test-key", gemini.base_url), poll_s=0.05, lease_s=60)
        with pytest.raises(RuntimeError):
            await first.step()
        await first.client.aclose()
        assert gemini.batches_created == 1
        [batch] = (await _job(api, job_id))["batches"]
        assert (batch["state"], batch["providerName"]) == ("SUBMITTING", None)
        # Its lease runs out; another runner takes the batch over, finds it at the provider and adopts it.
        conn = await asyncpg.connect(dsn=db_url)
        try:
            await conn.execute("UPDATE rerun_batches SET lease_expires_at = clock_timestamp() - interval '1 second'")
        finally:
            await conn.close()
        second = BatchRunner(db=api.db, client=GeminiBatchClient("test-key", gemini.base_url), poll_s=0.05, lease_s=60)
        try:
            deadline = time.monotonic() + 20
            while (await _job(api, job_id))["status"] not in ("SUCCEEDED", "FAILED", "PARTIALLY_FAILED"):
                assert time.monotonic() < deadline
                await second.step()
                await asyncio.sleep(0.05)
        finally:
            await second.client.aclose()
        assert gemini.batches_created == 1 and gemini.batch_requests_answered == 2
        job = await _job(api, job_id)
        assert (job["status"], job["succeeded"]) == ("SUCCEEDED", 2)
        assert job["batches"][0]["providerName"].startswith("batches/")
