"""Gemini Batch API: the batch client through the real google-genai SDK against the local Gemini-compatible server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from graphql_api.analysis.base import AnalysisConfig, AnalysisError, Conversation
from graphql_api.analysis.batch import BatchRequest, BatchResult, BatchState, GeminiBatchClient, normalize_state
from graphql_api.analysis.gemini import GeminiAnalyzer, make_client
from graphql_api.testing import ErrorReply, GeminiTestServer, RecordedRequest
# The analyzer tests' server fixtures (this module gets its own server, reset before each test), key, config and call.
from tests.test_gemini_analyzer import API_KEY, CALL, CONFIG, MODEL, fresh_server, server  # noqa: F401

FAST_RETRIES: dict[str, object] = {"base_delay_s": 0.001, "max_delay_s": 0.05, "request_timeout_s": 5.0}

PLAIN = AnalysisConfig(model=MODEL)
CALL_TEXT = Conversation(id="call_b2", kind="CALL", transcript="Agent: Hi\nUser: It came late, order B-2002.")
CHAT = Conversation(id="chat_b1", kind="CHAT", transcript="User: where is my order?\nAgent: on its way")
CHAT_EMPTY = Conversation(id="chat_b2", kind="CHAT", transcript="")

REQUESTS = [
    BatchRequest("rerun_ab12:1", CALL, CONFIG),
    BatchRequest("rerun_ab12:2", CALL_TEXT, CONFIG),
    BatchRequest("rerun_ab12:3", CHAT, CONFIG),
    BatchRequest("rerun_ab12:4", CHAT_EMPTY, PLAIN),
]


def make_batch_client(server: GeminiTestServer, **kwargs: object) -> GeminiBatchClient:
    return GeminiBatchClient(API_KEY, server.base_url, **{**FAST_RETRIES, **kwargs})  # type: ignore[arg-type]


@pytest.fixture
async def client(server: GeminiTestServer) -> AsyncIterator[GeminiBatchClient]:
    c = make_batch_client(server)
    yield c
    await c.aclose()


async def wait_until(client: GeminiBatchClient, name: str, *states: str, timeout_s: float = 5.0) -> list[BatchState]:
    """Poll until the batch is in one of `states` (by default: ended); every state seen, last one last."""
    seen: list[BatchState] = []
    deadline = time.monotonic() + timeout_s
    while True:
        seen.append(await client.state(name))
        if (seen[-1].state in states) if states else seen[-1].done:
            return seen
        assert time.monotonic() < deadline, f"batch {name} still {seen[-1].state}"
        await asyncio.sleep(0.01)


async def run_batch(client: GeminiBatchClient, requests: list[BatchRequest],
                    display_name: str = "rerun_ab12:chunk1") -> tuple[BatchState, list[BatchResult]]:
    name = await client.submit(requests, display_name=display_name)
    final = (await wait_until(client, name))[-1]
    return final, await client.results(name, requests)


def batch_requests(server: GeminiTestServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.batch is not None]


# ---- a batch that succeeds ------------------------------------------------------------------------


@pytest.mark.parametrize("reversed_answers", [False, True], ids=["input-order", "reversed"])
async def test_results_match_keys_and_equal_the_interactive_outcomes(
    server: GeminiTestServer, client: GeminiBatchClient, reversed_answers: bool
) -> None:
    server.thoughts_tokens = 3
    server.batch_reverse_responses = reversed_answers  # the API keeps input order; keys must not depend on it
    server.hold_batches()
    name = await client.submit(REQUESTS, display_name="rerun_ab12:chunk1")
    running = await wait_until(client, name, "RUNNING")
    assert {s.state for s in running} <= {"PENDING", "RUNNING"}
    assert not any(s.done for s in running)
    server.release_batches()
    seen = await wait_until(client, name)
    assert seen[-1] == BatchState(
        name=name, state="SUCCEEDED", done=True, error=None, display_name="rerun_ab12:chunk1",
        model=f"models/{MODEL}", create_time=seen[-1].create_time, end_time=seen[-1].end_time,
    )
    assert seen[-1].create_time is not None and seen[-1].end_time is not None
    results = await client.results(name, REQUESTS)

    analyzer = GeminiAnalyzer(API_KEY, server.base_url)
    try:
        interactive = [await analyzer.analyze(r.conversation, r.config) for r in REQUESTS]
    finally:
        await analyzer.aclose()
    assert [r.key for r in results] == [r.key for r in REQUESTS]
    assert [r.error for r in results] == [None] * len(REQUESTS)
    assert [r.outcome for r in results] == interactive
    # The tokens are the ones each answer reported: prompt tokens, output tokens plus thinking tokens.
    recorded = {r.batch_key: r for r in batch_requests(server)}
    for result in results:
        assert result.outcome is not None
        usage = recorded[result.key].usage
        assert usage is not None
        assert (result.outcome.input_tokens, result.outcome.output_tokens) == (usage[0], usage[1] + 3)
    assert results[0].outcome.summary == "The user said: My parcel A-1001 arrived broken, I want my money back."
    assert results[0].outcome.custom_data == {
        "order_id": "example", "reason": "damaged", "refund_issued": True, "amount_usd": 1,
    }
    assert results[2].outcome.in_voicemail is None
    assert results[3].outcome.custom_data == {}
    assert (server.batches_created, server.batch_requests_answered) == (1, len(REQUESTS))


async def test_batch_requests_are_the_interactive_requests(server: GeminiTestServer, client: GeminiBatchClient) -> None:
    await run_batch(client, REQUESTS)
    sent = batch_requests(server)
    analyzer = GeminiAnalyzer(API_KEY, server.base_url)
    try:
        for r in REQUESTS:
            await analyzer.analyze(r.conversation, r.config)
    finally:
        await analyzer.aclose()
    interactive = [r for r in server.requests if r.batch is None]

    assert [r.batch_key for r in sent] == [r.key for r in REQUESTS]
    assert len({r.batch for r in sent}) == 1
    for batch_request, direct in zip(sent, interactive, strict=True):
        assert batch_request.model == direct.model == MODEL
        assert batch_request.api_key == API_KEY
        assert batch_request.system_instruction == direct.system_instruction
        assert batch_request.contents == direct.contents
        assert batch_request.response_schema == direct.response_schema
        assert batch_request.generation_config == direct.generation_config
        assert batch_request.body == direct.body  # the very GenerateContentRequest, nothing added or left out
        assert batch_request.usage == direct.usage
    first = sent[0]
    assert "The order number the user gave." in first.system_instruction
    assert first.generation_config["responseMimeType"] == "application/json"
    assert first.generation_config["temperature"] == 0
    assert first.response_schema is not None
    assert set(first.response_schema["properties"]["custom_data"]["properties"]) == {
        "order_id", "reason", "refund_issued", "amount_usd",
    }
    assert "in_voicemail" not in (sent[2].response_schema or {})["properties"]


async def test_required_field_left_empty_makes_a_batch_result_unsuccessful(
    server: GeminiTestServer, client: GeminiBatchClient
) -> None:
    server.responder = lambda req: {
        "summary": "s", "successful": True, "user_sentiment": "POSITIVE", "in_voicemail": False,
        "custom_data": {"order_id": None, "reason": "late"},
    }
    _, [result] = await run_batch(client, REQUESTS[:1])
    assert result.outcome is not None
    assert result.outcome.successful is False
    assert result.outcome.custom_data == {"order_id": None, "reason": "late", "refund_issued": None, "amount_usd": None}


async def test_results_fall_back_to_positions_when_the_api_echoes_no_metadata(
    server: GeminiTestServer, client: GeminiBatchClient
) -> None:
    server.batch_echo_metadata = False
    _, results = await run_batch(client, REQUESTS)
    assert [r.key for r in results] == [r.key for r in REQUESTS]
    assert [r.outcome.summary if r.outcome else None for r in results] == [
        "The user said: My parcel A-1001 arrived broken, I want my money back.",
        "The user said: It came late, order B-2002.",
        "The user said: where is my order?",
        "A conversation between the agent and the user.",
    ]


# ---- requests that fail inside a batch ------------------------------------------------------------


async def test_per_request_errors_and_a_malformed_answer_come_back_as_errors(
    server: GeminiTestServer, client: GeminiBatchClient
) -> None:
    server.malformed_next(1, mode="missing")  # the first request answered: CALL
    server.responder = lambda req: ErrorReply(400, "Unsupported content.") if "where is my order" in req.contents else None
    state, results = await run_batch(client, REQUESTS)

    assert state.state == "SUCCEEDED"  # a batch succeeds as a whole even when some requests fail
    malformed, fine, rejected, empty = results
    assert malformed.outcome is None and malformed.error is not None
    assert "summary" in str(malformed.error)
    assert malformed.error.retryable is False
    recorded = {r.batch_key: r for r in batch_requests(server)}
    usage = recorded[malformed.key].usage
    assert malformed.error.usage is not None and usage is not None
    assert (malformed.error.usage.model, malformed.error.usage.input_tokens, malformed.error.usage.output_tokens) == (
        MODEL, usage[0], usage[1],
    )
    assert rejected.error is not None and rejected.outcome is None
    assert malformed.answered and rejected.answered  # the model (or the API) did answer them
    assert (rejected.error.status, rejected.error.retryable, rejected.error.usage) == (400, False, None)
    assert "Unsupported content." in str(rejected.error)
    assert fine.outcome is not None and empty.outcome is not None


async def test_an_inline_error_with_a_retryable_code_is_retryable(
    server: GeminiTestServer, client: GeminiBatchClient
) -> None:
    server.fail_batch_requests_next(2, status=503)
    _, results = await run_batch(client, REQUESTS[:3])
    assert [(r.error.status, r.error.retryable) if r.error else None for r in results] == [
        (503, True), (503, True), None,
    ]
    assert server.batch_requests_answered == 3


def test_a_batch_result_holds_exactly_one_of_outcome_and_error() -> None:
    with pytest.raises(ValueError):
        BatchResult("k")
    with pytest.raises(ValueError):
        BatchResult("k", outcome=None, error=None)


# ---- batches that end without success ---------------------------------------------------------------


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (400, False)])
async def test_a_failed_batch_reports_why_and_fails_every_request(
    server: GeminiTestServer, client: GeminiBatchClient, status: int, retryable: bool
) -> None:
    server.fail_next_batch("The batch could not be processed.", status=status)
    state, results = await run_batch(client, REQUESTS)
    assert (state.state, state.done, state.error) == ("FAILED", True, "The batch could not be processed.")
    assert all(r.outcome is None and r.error is not None and not r.answered for r in results)
    assert all((r.error.retryable, r.error.status, r.error.usage) == (retryable, status, None)  # type: ignore[union-attr]
               for r in results)
    assert f"ended FAILED without answering {CALL.id}: The batch could not be processed." in str(results[0].error)
    assert server.batch_requests_answered == 0


@pytest.mark.parametrize("partial", [False, True], ids=["no-partial-results", "partial-results"])
async def test_an_expired_batch_fails_what_it_did_not_answer(
    server: GeminiTestServer, client: GeminiBatchClient, partial: bool
) -> None:
    server.batch_partial_results = partial
    server.expire_next_batch(answered=1)
    state, results = await run_batch(client, REQUESTS)
    assert (state.state, state.done) == ("EXPIRED", True)
    assert state.error is not None and "expired" in state.error
    assert server.batch_requests_answered == 1
    first, *rest = results
    if partial:
        assert first.outcome is not None and first.outcome.summary
    else:
        assert first.error is not None and first.error.retryable is True
    assert first.answered is partial
    assert all(r.error is not None and r.error.retryable and not r.answered and "ended EXPIRED" in str(r.error)
               for r in rest)


@pytest.mark.parametrize("partial", [False, True], ids=["no-partial-results", "partial-results"])
async def test_cancel_of_a_held_batch_ends_it_cancelled(
    server: GeminiTestServer, client: GeminiBatchClient, partial: bool
) -> None:
    server.batch_partial_results = partial
    server.hold_batches(answered=2)
    name = await client.submit(REQUESTS, display_name="rerun_ab12:cancel")
    running = (await wait_until(client, name, "RUNNING"))[-1]
    assert (running.done, running.error) == (False, None)
    with pytest.raises(AnalysisError) as info:
        await client.results(name, REQUESTS)
    assert info.value.retryable is True

    await client.cancel(name)
    server.release_batches()
    state = await client.state(name)
    assert (state.state, state.done) == ("CANCELLED", True)
    assert state.error == "The batch was cancelled."
    assert (server.batches_cancelled, server.batch_requests_answered) == (1, 2)
    results = await client.results(name, REQUESTS)
    answered = [r.key for r in results if r.outcome is not None]
    assert answered == ([r.key for r in REQUESTS[:2]] if partial else [])
    unanswered = [r for r in results if r.error is not None]
    assert [r.key for r in unanswered] == [r.key for r in REQUESTS[2 if partial else 0:]]
    assert all(not r.answered and r.error.retryable and "ended CANCELLED" in str(r.error)  # type: ignore[union-attr]
               for r in unanswered)

    await client.cancel(name)  # cancelling an ended batch changes nothing
    assert (await client.state(name)).state == "CANCELLED"
    assert server.batches_cancelled == 1


# ---- finding, deleting ------------------------------------------------------------------------------


async def test_find_returns_the_newest_batch_with_that_display_name(server: GeminiTestServer) -> None:
    client = make_batch_client(server, list_page_size=2)  # several pages: the SDK's pager with page tokens
    try:
        older = await client.submit(REQUESTS[:1], display_name="rerun_cd34:chunk1")
        for n in range(3):
            await client.submit(REQUESTS[:1], display_name=f"other:{n}")
        newer = await client.submit(REQUESTS[:1], display_name="rerun_cd34:chunk1")
        await client.submit(REQUESTS[:1], display_name="other:last")
        assert older != newer
        assert await client.find("rerun_cd34:chunk1") == newer
        assert await client.find("rerun_cd34:chunk2") is None
        lists = [c for c in server.batch_api_calls if c.method == "GET" and "pageSize=2" in c.path]
        assert len(lists) == 6  # 6 batches on 3 pages, listed twice
    finally:
        await client.aclose()


async def test_the_sdk_pager_walks_every_page_newest_first(server: GeminiTestServer, client: GeminiBatchClient) -> None:
    names = [await client.submit(REQUESTS[:1], display_name=f"page:{n}") for n in range(5)]
    sdk = make_client(API_KEY, server.base_url, request_timeout_s=5.0)
    try:
        pager = await sdk.aio.batches.list(config={"page_size": 2})
        assert [job.name async for job in pager] == names[::-1]
    finally:
        await sdk.aio.aclose()


async def test_delete_forgets_the_batch(server: GeminiTestServer, client: GeminiBatchClient) -> None:
    name = await client.submit(REQUESTS[:1], display_name="gone")
    await client.delete(name)
    assert server.batch_state(name) is None
    with pytest.raises(AnalysisError) as info:
        await client.state(name)
    assert (info.value.status, info.value.retryable) == (404, False)
    assert await client.find("gone") is None


# ---- retries and refusals ---------------------------------------------------------------------------


async def test_a_retryable_503_on_create_is_retried_after_checking_nothing_was_made(
    server: GeminiTestServer, client: GeminiBatchClient
) -> None:
    server.fail_next(1, status=503)
    state, results = await run_batch(client, REQUESTS)
    assert state.state == "SUCCEEDED"
    assert all(r.outcome is not None for r in results)
    calls = [(c.method, c.path.split("/")[-1], c.status) for c in server.batch_api_calls][:3]
    assert calls == [
        ("POST", f"{MODEL}:batchGenerateContent", 503),
        ("GET", "batches?pageSize=50", 200),  # a lost answer may have made the batch: look before creating again
        ("POST", f"{MODEL}:batchGenerateContent", 200),
    ]
    assert server.batches_created == 1


async def test_a_create_whose_answer_is_lost_adopts_the_batch_instead_of_making_another(
    server: GeminiTestServer,
) -> None:
    server.delay_next(1, 1.0)  # the batch is made at once, its answer comes after the client gave up
    client = make_batch_client(server, request_timeout_s=0.2)
    try:
        name = await client.submit(REQUESTS, display_name="rerun_ef56:chunk1")
        assert server.batches_created == 1
        assert server.batch_state(name) is not None
        assert len(batch_requests(server)) == len(REQUESTS)
    finally:
        await client.aclose()


async def test_polling_retries_a_429_with_the_server_delay(server: GeminiTestServer, client: GeminiBatchClient) -> None:
    name = await client.submit(REQUESTS[:1], display_name="poll")
    server.fail_next(2, status=429, retry_delay="0.05s")
    client.max_delay_s = 1.0
    started = time.monotonic()
    state = await client.state(name)
    assert time.monotonic() - started >= 0.1
    assert state.state in ("PENDING", "RUNNING", "SUCCEEDED")
    assert [c.status for c in server.batch_api_calls[-3:]] == [429, 429, 200]


async def test_exhausted_retries_raise_a_retryable_error(server: GeminiTestServer) -> None:
    server.fail_always(503)
    client = make_batch_client(server, max_attempts=2)
    try:
        with pytest.raises(AnalysisError) as info:
            await client.submit(REQUESTS, display_name="never")
    finally:
        await client.aclose()
    assert (info.value.retryable, info.value.status) == (True, 503)
    assert server.batches_created == 0


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_client_errors_on_create_are_not_retried(
    server: GeminiTestServer, client: GeminiBatchClient, status: int
) -> None:
    server.fail_next(1, status=status)
    with pytest.raises(AnalysisError) as info:
        await client.submit(REQUESTS, display_name="refused")
    assert (info.value.status, info.value.retryable) == (status, False)
    assert len(server.batch_api_calls) == 1


async def test_an_invalid_api_key_is_refused_at_once(server: GeminiTestServer) -> None:
    client = GeminiBatchClient("wrong-key", server.base_url, base_delay_s=0.001)
    try:
        with pytest.raises(AnalysisError, match="API key not valid") as info:
            await client.submit(REQUESTS, display_name="refused")
    finally:
        await client.aclose()
    assert (info.value.status, info.value.retryable) == (400, False)
    assert server.batches_created == 0


async def test_submit_refuses_an_empty_batch_mixed_models_and_duplicate_keys(client: GeminiBatchClient) -> None:
    with pytest.raises(ValueError, match="at least one"):
        await client.submit([], display_name="x")
    with pytest.raises(ValueError, match="one model"):
        await client.submit([REQUESTS[0], BatchRequest("other", CHAT, AnalysisConfig(model="gemini-2.5-pro"))],
                            display_name="x")
    with pytest.raises(ValueError, match="unique"):
        await client.submit([REQUESTS[0], BatchRequest(REQUESTS[0].key, CHAT, CONFIG)], display_name="x")
    with pytest.raises(ValueError, match="display name"):
        await client.submit(REQUESTS, display_name="")


def test_states_are_normalized_from_the_sdk_and_the_api() -> None:
    assert [normalize_state(s) for s in (
        "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED", "BATCH_STATE_RUNNING", "JOB_STATE_QUEUED",
        "JOB_STATE_CANCELLING", "JOB_STATE_PARTIALLY_SUCCEEDED", None, "SOMETHING_NEW",
    )] == [
        "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "RUNNING", "PENDING",
        "RUNNING", "SUCCEEDED", "PENDING", "RUNNING",
    ]


# ---- the test server's wire format --------------------------------------------------------------------


def test_server_batch_wire_format(server: GeminiTestServer) -> None:
    server.batch_delay_s = 0.0
    headers = {"x-goog-api-key": API_KEY}
    created = httpx.post(f"{server.base_url}/v1beta/models/{MODEL}:batchGenerateContent", headers=headers, json={
        "batch": {"displayName": "wire", "inputConfig": {"requests": {"requests": [
            {"request": {"contents": [{"role": "user", "parts": [{"text": "User: hi"}]}]}, "metadata": {"key": "a"}},
            {"request": {"contents": [{"role": "user", "parts": [{"text": "User: yo"}]}]}},
        ]}}},
    })
    assert created.status_code == 200
    operation = created.json()
    name = operation["name"]
    assert name.startswith("batches/")
    assert "done" not in operation
    assert operation["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert operation["metadata"]["@type"].endswith("GenerateContentBatch")
    assert operation["metadata"]["batchStats"] == {"requestCount": "2", "pendingRequestCount": "2"}

    done = httpx.get(f"{server.base_url}/v1beta/{name}", headers=headers).json()
    assert done["done"] is True and done["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    answers = done["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert done["response"]["inlinedResponses"]["inlinedResponses"] == answers
    assert [a.get("metadata") for a in answers] == [{"key": "a"}, None]
    assert answers[0]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "{}"
    assert answers[0]["response"]["usageMetadata"]["promptTokenCount"] > 0
    assert [(r.batch, r.batch_key, r.contents) for r in server.requests] == [(name, "a", "User: hi"), (name, None, "User: yo")]

    listed = httpx.get(f"{server.base_url}/v1beta/batches", params={"pageSize": 1}, headers=headers).json()
    assert [op["name"] for op in listed["operations"]] == [name]
    assert "nextPageToken" not in listed
    assert httpx.post(f"{server.base_url}/v1beta/{name}:cancel", headers=headers).json() == {}
    assert httpx.get(f"{server.base_url}/v1beta/batches/nope", headers=headers).status_code == 404
    assert httpx.delete(f"{server.base_url}/v1beta/{name}", headers=headers).json() == {}
    assert httpx.get(f"{server.base_url}/v1beta/batches", headers=headers).json() == {}
    assert httpx.put(f"{server.base_url}/v1beta/batches", headers=headers).status_code == 404
