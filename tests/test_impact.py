"""Impact before and after (issue 12, item 3): previewImpact on a seeded sample of conversations, and RerunJob.impact
as a job runs, in GraphQL and in rerunProgress events, through the real google-genai client and real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import UTC, datetime
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from gql import GraphQLRequest

from graphql_api.testing import example_from_schema
from graphql_api.testing.processes import ServerProcess, cli
from tests.conftest import data, error_codes, running_api
from tests.factories import BASE_MS, call, load, voice_agent
from tests.reruns_helpers import RERUN, wait_final
from tests.test_e2e_reruns import _gemini_env, _post, _ws_client

IMPACT = """impact { compared withoutPreviousResult flippedToSuccessful flippedToUnsuccessful sentimentChanged
  customDataChanged { name changed } }"""
RESULT = "id trigger successful userSentiment customData costUsd charged"
PREVIEW = f"""mutation($input: PreviewImpactInput!) {{ previewImpact(input: $input) {{
  seed matched configVersion costUsd {IMPACT}
  conversations {{ conversationId error costUsd currentResult {{ {RESULT} }} preview {{ {RESULT} }} }}
}} }}"""
JOB_IMPACT = f"""query($id: ID!) {{ rerunJob(id: $id) {{ id status succeeded failed {IMPACT}
  items(first: 100) {{ nodes {{ conversationId status result {{ {RESULT} }} previousResult {{ {RESULT} }} }} }} }} }}"""
JOBS_IMPACT = f"{{ rerunJobs(first: 10) {{ nodes {{ id succeeded {IMPACT} }} }} }}"


class Outcomes:
    """The model's answers: before (the initial analyses) and after (previews and reruns), by the case number in the
    transcript, so that some conversations flip each way, change sentiment or change the custom field."""

    def __init__(self) -> None:
        self.after = False

    def __call__(self, request):
        answer = example_from_schema(request.response_schema, request.contents)
        n = int(re.search(r"case (\d+)", request.contents).group(1))
        if self.after:
            answer |= {"successful": n % 3 != 0, "user_sentiment": "POSITIVE" if n % 4 == 0 else "NEUTRAL"}
            answer["custom_data"] = {"visit_type": "checkup" if n % 5 == 0 else "cleaning"}
        else:
            answer |= {"successful": n % 2 == 0, "user_sentiment": "NEUTRAL"}
            answer["custom_data"] = {"visit_type": "cleaning"}
        return answer


def _case_call(n: int, **extra) -> dict:
    said = [{"role": "agent", "content": "Hello."}, {"role": "user", "content": f"This is case {n}, book a cleaning."}]
    return call(f"call_{n:02d}", minute=n, utterances=said, **extra)


RECORDS = [voice_agent(version=0), voice_agent(version=1, published=False)] + [_case_call(n) for n in range(12)]


def _expected(pairs: list[tuple[dict | None, dict]]) -> dict:
    """The impact, counted here from (previous, new) results as the API shows them."""
    compared = [(p, c) for p, c in pairs if p is not None]
    names = sorted({k for p, c in compared for k in {**(p["customData"] or {}), **(c["customData"] or {})}})
    return {
        "compared": len(compared),
        "withoutPreviousResult": len(pairs) - len(compared),
        "flippedToSuccessful": sum(1 for p, c in compared if c["successful"] and not p["successful"]),
        "flippedToUnsuccessful": sum(1 for p, c in compared if p["successful"] and not c["successful"]),
        "sentimentChanged": sum(1 for p, c in compared if p["userSentiment"] != c["userSentiment"]),
        "customDataChanged": [
            {"name": k, "changed": sum(1 for p, c in compared if (p["customData"] or {}).get(k) != (c["customData"] or {}).get(k))}
            for k in names
        ],
    }


@contextlib.asynccontextmanager
async def _loaded(db_url: str, gemini, concurrency: int) -> AsyncIterator[tuple[Any, str]]:
    """A server on the Gemini test server with RECORDS analyzed "before"; the model answers "after" from then on."""
    outcomes = Outcomes()
    gemini.responder = outcomes
    async with running_api(db_url, gemini_api_key="test-key", gemini_base_url=gemini.base_url,
                           analysis_concurrency=concurrency) as api:
        key = await api.key_for("acme")
        await load(api, "acme", RECORDS, analyzer=api.services.analyzer)
        outcomes.after = True
        gemini.clear_requests()
        yield api, key


async def test_a_sample_preview_is_reproducible_respects_filter_and_size_and_counts_its_pairs(db_url, gemini) -> None:
    async with _loaded(db_url, gemini, concurrency=3) as (api, key):

        async def preview(**input) -> dict:
            return data(await api.gql(PREVIEW, {"input": {"agentId": "agent_voice1", **input}}, key=key))["previewImpact"]

        first = await preview(size=5, seed=7)
        again = await preview(size=5, seed=7)
        other = await preview(size=5, seed=8)
        ids = [c["conversationId"] for c in first["conversations"]]
        assert len(set(ids)) == 5 and ids == [c["conversationId"] for c in again["conversations"]]
        assert ids != [c["conversationId"] for c in other["conversations"]]
        assert first["seed"] == 7 and first["matched"] == 12 and first["configVersion"] == 1
        assert first["impact"] == again["impact"]
        assert gemini.request_count == 15 and gemini.max_in_flight <= 3

        # Each preview next to the current result, which it did not replace; charged like previewAnalysis.
        for conversation in first["conversations"]:
            current, new = conversation["currentResult"], conversation["preview"]
            n = int(conversation["conversationId"].removeprefix("call_"))
            assert current["trigger"] == "INITIAL" and current["successful"] == (n % 2 == 0)
            assert new["trigger"] == "PREVIEW" and new["successful"] == (n % 3 != 0) and new["charged"]
            assert Decimal(conversation["costUsd"]) == Decimal(new["costUsd"]) > 0
            shown = data(await api.gql("query($id: ID!) { call(id: $id) { analysis { id } } }",
                                       {"id": conversation["conversationId"]}, key=key))["call"]
            assert shown["analysis"]["id"] == current["id"]
        assert Decimal(first["costUsd"]) == sum(Decimal(c["costUsd"]) for c in first["conversations"])
        assert first["impact"] == _expected([(c["currentResult"], c["preview"]) for c in first["conversations"]])

        # The filter and the size: every conversation of the filter when it holds fewer than the size.
        sixth = datetime.fromtimestamp(BASE_MS / 1000 + 6 * 60, UTC).isoformat()
        late = await preview(size=50, seed=1, filter={"startedAfter": sixth, "successful": True})
        late_ids = {c["conversationId"] for c in late["conversations"]}
        assert late_ids == {f"call_{n:02d}" for n in range(6, 12) if n % 2 == 0} and late["matched"] == 3
        whole = await preview(size=50)
        assert whole["matched"] == 12 and len(whole["conversations"]) == 12 and isinstance(whole["seed"], int)
        expected = _expected([(c["currentResult"], c["preview"]) for c in whole["conversations"]])
        assert whole["impact"] == expected
        # Cases 0..11: before successful when even, after unless a multiple of 3; the field changes on 0, 5, 10.
        assert expected["flippedToSuccessful"] == 4 and expected["flippedToUnsuccessful"] == 2
        assert expected["sentimentChanged"] == 3 and expected["customDataChanged"] == [{"name": "visit_type", "changed": 3}]

        # Refusals: size out of range, unknown and foreign agents alike.
        for size in (0, 51):
            refused = await api.gql(PREVIEW, {"input": {"agentId": "agent_voice1", "size": size}}, key=key)
            assert error_codes(refused) == ["BAD_USER_INPUT"] and refused["errors"][0]["extensions"]["argument"] == "input.size"
        stranger = await api.key_for("other")
        for who in (key, stranger):
            agent = "agent_nope" if who == key else "agent_voice1"
            refused = await api.gql(PREVIEW, {"input": {"agentId": agent}}, key=who)
            assert error_codes(refused) == ["NOT_FOUND"]


async def test_a_jobs_impact_matches_its_results_and_agrees_with_the_webhook(db_url, gemini) -> None:
    async with _loaded(db_url, gemini, concurrency=1) as (api, key):
        created = await api.gql(
            """mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id } } }""",
            {"input": {"url": "http://127.0.0.1:9/hook"}}, key=key)
        endpoint = data(created)["createWebhookEndpoint"]["endpoint"]["id"]
        gemini.delay_s = 0.05

        job = data(await api.gql(RERUN, {"input": {"agentId": "agent_voice1"}}, key=key))["rerunAnalysis"]["job"]
        seen = []
        while True:
            read = data(await api.gql(JOB_IMPACT, {"id": job["id"]}, key=key))["rerunJob"]
            seen.append((read["succeeded"], read["impact"]["compared"]))
            if read["status"] not in ("QUEUED", "RUNNING"):
                break
            await asyncio.sleep(0.02)
        # As of the counters it is read with: one compared result per succeeded item, growing as items finish.
        assert all(succeeded == compared for succeeded, compared in seen)
        assert len({s for s, _ in seen}) > 2 and seen[-1][0] == 12
        final = await wait_final(api, key, job["id"])
        assert final["status"] == "SUCCEEDED"
        pairs = [(i["previousResult"], i["result"]) for i in read["items"]["nodes"]]
        assert read["impact"] == _expected(pairs)
        assert read["impact"]["flippedToSuccessful"] == 4 and read["impact"]["flippedToUnsuccessful"] == 2

        # A page of jobs (one loader batch) says the same, and the rerun.finished webhook agrees.
        page = data(await api.gql(JOBS_IMPACT, key=key))["rerunJobs"]["nodes"]
        assert page == [{"id": job["id"], "succeeded": 12, "impact": read["impact"]}]
        deliveries = await api.gql(
            "query($id: ID!) { webhookDeliveries(endpointId: $id) { nodes { jobId payload } } }", {"id": endpoint}, key=key)
        (delivery,) = data(deliveries)["webhookDeliveries"]["nodes"]
        payload = delivery["payload"] if isinstance(delivery["payload"], dict) else json.loads(delivery["payload"])
        impact = read["impact"]
        assert payload["data"]["impact"] == {
            "compared": impact["compared"], "without_previous_result": impact["withoutPreviousResult"],
            "flipped_to_successful": impact["flippedToSuccessful"],
            "flipped_to_unsuccessful": impact["flippedToUnsuccessful"], "sentiment_changed": impact["sentimentChanged"],
        }


SUBSCRIPTION = f"""subscription($id: ID!) {{ rerunProgress(jobId: $id) {{
  job {{ status succeeded {IMPACT} }} item {{ conversationId }} }} }}"""


async def test_rerun_progress_events_carry_the_impact_as_of_their_counters(db_url, tmp_path: Path, gemini) -> None:
    created = cli("create-api-key", "--workspace", "e2e", db_url=db_url, data_dir=tmp_path)
    key = created.stdout.strip().splitlines()[-1]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS[:8]))
    assert cli("import", str(path), "--workspace", "e2e", db_url=db_url, data_dir=tmp_path).returncode == 0
    outcomes = Outcomes()
    outcomes.after = True
    gemini.responder = outcomes
    gemini.delay_s = 0.2
    with ServerProcess(db_url=db_url, data_dir=tmp_path, env=_gemini_env(gemini, ANALYSIS_CONCURRENCY="1")) as server:
        query = "mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id } } }"
        job = (await _post(server, key, query, {"input": {"agentId": "agent_voice1"}}))["rerunAnalysis"]["job"]
        async with _ws_client(server, key, "graphql-transport-ws") as session:
            events = [e["rerunProgress"] async for e in session.subscribe(GraphQLRequest(SUBSCRIPTION, variable_values={"id": job["id"]}))]
        final = (await _post(server, key, JOB_IMPACT, {"id": job["id"]}))["rerunJob"]
    assert len(events) > 2 and events[-1]["job"]["status"] == "SUCCEEDED"
    assert all(e["job"]["impact"]["compared"] == e["job"]["succeeded"] for e in events)
    assert events[-1]["job"]["impact"] == final["impact"]
    assert final["impact"] == _expected([(i["previousResult"], i["result"]) for i in final["items"]["nodes"]])
