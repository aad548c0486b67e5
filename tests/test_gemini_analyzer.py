"""The Gemini analyzer through the real google-genai client against the local Gemini-compatible server."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from graphql_api.analysis.base import (
    AnalysisConfig,
    AnalysisError,
    Conversation,
    DataField,
    Utterance,
)
from graphql_api.analysis.gemini import GeminiAnalyzer, parse_retry_delay
from graphql_api.analysis.prompting import (
    build_response_schema,
    build_system_instruction,
    estimate_tokens,
    estimate_usage,
    parse_model_output,
    render_transcript,
)
from graphql_api.testing import ErrorReply, GeminiTestServer, RecordedRequest

API_KEY = "test-gemini-key"
MODEL = "gemini-2.5-flash"

CONFIG = AnalysisConfig(
    model=MODEL,
    summary_prompt="Summarise the refund request in one sentence.",
    successful_prompt="Successful when the agent issued the refund.",
    user_sentiment_prompt="How did the customer feel about the refund?",
    data_fields=(
        DataField("order_id", "STRING", "The order number the user gave.", ("A-1001", "B-2002"), required=True),
        DataField("reason", "ENUM", "Why the user wants a refund.", ("damaged",), ("damaged", "late", "other")),
        DataField("refund_issued", "BOOLEAN", "Whether the agent issued the refund."),
        DataField("amount_usd", "NUMBER", "The refunded amount in dollars.", ("12.5",)),
    ),
)
CALL = Conversation(
    id="call_test1",
    kind="CALL",
    transcript="ignored when utterances exist",
    utterances=(
        Utterance("agent", "Hello, how can I help?"),
        Utterance("user", "My parcel A-1001 arrived broken, I want my money back."),
        Utterance("agent", "I have refunded 12.50 dollars."),
    ),
)
CHAT = Conversation(id="chat_test1", kind="CHAT", transcript="User: hi\nAgent: hello")


@pytest.fixture(scope="module")
def server() -> Iterator[GeminiTestServer]:
    with GeminiTestServer(expected_api_key=API_KEY) as srv:
        yield srv


@pytest.fixture(autouse=True)
def fresh_server(server: GeminiTestServer) -> None:
    server.reset()


def make_analyzer(server: GeminiTestServer, **kwargs: object) -> GeminiAnalyzer:
    options: dict[str, object] = {"base_delay_s": 0.001, "max_delay_s": 0.05, "request_timeout_s": 5.0}
    options.update(kwargs)
    return GeminiAnalyzer(API_KEY, server.base_url, **options)  # type: ignore[arg-type]


@pytest.fixture
async def analyzer(server: GeminiTestServer) -> AsyncIterator[GeminiAnalyzer]:
    a = make_analyzer(server)
    yield a
    await a.aclose()


def good_output(**overrides: object) -> dict[str, object]:
    out: dict[str, object] = {
        "summary": "The user got a refund for a damaged parcel.",
        "successful": True,
        "user_sentiment": "POSITIVE",
        "in_voicemail": False,
        "custom_data": {"order_id": "A-1001", "reason": "damaged", "refund_issued": True, "amount_usd": 12.5},
    }
    out.update(overrides)
    return out


# ---- what is sent -------------------------------------------------------------------------------


async def test_request_carries_prompts_fields_and_a_schema_with_every_custom_field(
    server: GeminiTestServer, analyzer: GeminiAnalyzer
) -> None:
    await analyzer.analyze(CALL, CONFIG)

    [req] = server.requests
    assert req.model == MODEL
    assert req.api_key == API_KEY
    for text in (
        CONFIG.summary_prompt, CONFIG.successful_prompt, CONFIG.user_sentiment_prompt,
        "The order number the user gave.", '"A-1001", "B-2002"',
        "Why the user wants a refund.", '"damaged", "late", "other"', "voicemail", "JSON",
    ):
        assert text in req.system_instruction
    assert req.contents == render_transcript(CALL)
    assert req.contents.splitlines()[1] == "User: My parcel A-1001 arrived broken, I want my money back."
    assert req.generation_config["responseMimeType"] == "application/json"
    assert req.generation_config["temperature"] == 0

    schema = req.response_schema
    assert schema is not None
    assert set(schema["properties"]) == {"summary", "successful", "user_sentiment", "in_voicemail", "custom_data"}
    assert schema["properties"]["user_sentiment"]["enum"] == ["NEGATIVE", "NEUTRAL", "POSITIVE", "UNKNOWN"]
    custom = schema["properties"]["custom_data"]["properties"]
    assert {name: p["type"] for name, p in custom.items()} == {
        "order_id": "STRING", "reason": "STRING", "refund_issued": "BOOLEAN", "amount_usd": "NUMBER",
    }
    assert custom["reason"]["enum"] == ["damaged", "late", "other"]
    assert custom["reason"]["nullable"] is True
    assert "nullable" not in custom["order_id"]
    assert "The order number the user gave." in custom["order_id"]["description"]


async def test_chat_schema_and_prompt_leave_out_voicemail(server: GeminiTestServer, analyzer: GeminiAnalyzer) -> None:
    outcome = await analyzer.analyze(CHAT, AnalysisConfig(model=MODEL))

    [req] = server.requests
    assert "in_voicemail" not in req.system_instruction
    assert req.response_schema is not None
    # No custom fields: Gemini rejects an OBJECT without properties, so custom_data is left out.
    assert set(req.response_schema["properties"]) == {"summary", "successful", "user_sentiment"}
    assert outcome.in_voicemail is None
    assert outcome.custom_data == {}


async def test_default_answer_is_parsed_and_usage_is_read(server: GeminiTestServer, analyzer: GeminiAnalyzer) -> None:
    server.thoughts_tokens = 7
    outcome = await analyzer.analyze(CALL, CONFIG)

    [req] = server.requests
    assert req.usage is not None
    assert outcome.model == MODEL
    assert outcome.input_tokens == req.usage[0]
    assert outcome.output_tokens == req.usage[1] + 7  # thinking tokens are billed as output
    assert outcome.summary == "The user said: My parcel A-1001 arrived broken, I want my money back."
    assert outcome.successful is True
    assert outcome.user_sentiment == "NEUTRAL"
    assert outcome.in_voicemail is False
    assert outcome.custom_data == {"order_id": "example", "reason": "damaged", "refund_issued": True, "amount_usd": 1}


async def test_responder_answer_is_returned_typed(server: GeminiTestServer, analyzer: GeminiAnalyzer) -> None:
    server.responder = lambda req: good_output()
    outcome = await analyzer.analyze(CALL, CONFIG)
    assert outcome.user_sentiment == "POSITIVE"
    assert outcome.custom_data == {"order_id": "A-1001", "reason": "damaged", "refund_issued": True, "amount_usd": 12.5}


# ---- retries ------------------------------------------------------------------------------------


async def test_429_with_retry_info_waits_the_server_delay_then_succeeds(
    server: GeminiTestServer, analyzer: GeminiAnalyzer
) -> None:
    server.fail_next(1, status=429, retry_delay="0.3s")
    analyzer.max_delay_s = 5.0
    started = time.monotonic()
    outcome = await analyzer.analyze(CALL, CONFIG)

    first, second = server.requests
    assert (first.response_status, second.response_status) == (429, 200)
    assert 0.3 <= second.received_at - first.received_at < 0.3 * 1.1 + 0.2
    assert time.monotonic() - started >= 0.3
    assert outcome.successful is True


async def test_retry_info_delay_is_capped_by_max_delay(server: GeminiTestServer) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    server.fail_next(2, status=429, retry_delay="30s")
    a = make_analyzer(server, max_delay_s=0.02, sleep=fake_sleep)
    try:
        await a.analyze(CALL, CONFIG)
    finally:
        await a.aclose()
    assert slept == [0.02, 0.02]
    assert server.request_count == 3


async def test_backoff_grows_exponentially_with_jitter_when_no_retry_info(server: GeminiTestServer) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    server.fail_next(4, status=503)
    a = make_analyzer(server, base_delay_s=1.0, max_delay_s=5.0, sleep=fake_sleep, jitter=lambda: 1.0)
    try:
        await a.analyze(CALL, CONFIG)
    finally:
        await a.aclose()
    assert slept == [1.0, 2.0, 4.0, 5.0]
    b = make_analyzer(server, base_delay_s=1.0, max_delay_s=5.0, jitter=lambda: 0.0)
    assert [b.backoff_delay(n, None) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    await b.aclose()


async def test_500s_then_success_retries_and_logs_each_attempt(
    server: GeminiTestServer, analyzer: GeminiAnalyzer, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_next(3, status=500)
    with caplog.at_level(logging.WARNING, logger="graphql_api.analysis.gemini"):
        outcome = await analyzer.analyze(CALL, CONFIG)

    assert [r.response_status for r in server.requests] == [500, 500, 500, 200]
    assert outcome.summary
    retries = [r for r in caplog.records if r.name == "graphql_api.analysis.gemini"]
    assert [(r.attempt, r.status) for r in retries] == [(1, 500), (2, 500), (3, 500)]  # type: ignore[attr-defined]
    assert all(r.conversation_id == CALL.id and r.delay_s >= 0 for r in retries)  # type: ignore[attr-defined]
    assert retries[0].getMessage().startswith(f"gemini_retry conversation_id={CALL.id} attempt=1 max_attempts=5 status=500 ")


async def test_exhausted_retries_raise_a_retryable_error_with_the_last_status(server: GeminiTestServer) -> None:
    server.fail_always(503)
    a = make_analyzer(server, max_attempts=3)
    try:
        with pytest.raises(AnalysisError) as info:
            await a.analyze(CALL, CONFIG)
    finally:
        await a.aclose()
    assert info.value.retryable is True
    assert info.value.status == 503
    assert server.request_count == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retried(server: GeminiTestServer, analyzer: GeminiAnalyzer, status: int) -> None:
    server.fail_next(1, status=status)
    with pytest.raises(AnalysisError) as info:
        await analyzer.analyze(CALL, CONFIG)
    assert info.value.retryable is False
    assert info.value.status == status
    assert server.request_count == 1


async def test_invalid_api_key_fails_at_once(server: GeminiTestServer) -> None:
    a = GeminiAnalyzer("wrong-key", server.base_url, base_delay_s=0.001)
    try:
        with pytest.raises(AnalysisError) as info:
            await a.analyze(CALL, CONFIG)
    finally:
        await a.aclose()
    assert (info.value.status, info.value.retryable) == (400, False)
    assert "API key not valid" in str(info.value)
    assert server.request_count == 1


async def test_a_slow_answer_times_out_and_is_retried(server: GeminiTestServer) -> None:
    server.delay_next(1, 1.0)
    a = make_analyzer(server, request_timeout_s=0.2)
    try:
        started = time.monotonic()
        outcome = await a.analyze(CALL, CONFIG)
    finally:
        await a.aclose()
    assert outcome.summary
    assert server.request_count == 2
    assert time.monotonic() - started < 0.9


async def test_timeouts_on_every_attempt_raise_a_retryable_error(server: GeminiTestServer) -> None:
    server.delay_s = 0.5
    a = make_analyzer(server, request_timeout_s=0.1, max_attempts=2)
    try:
        with pytest.raises(AnalysisError) as info:
            await a.analyze(CALL, CONFIG)
    finally:
        await a.aclose()
    assert info.value.retryable is True
    assert info.value.status is None
    assert "Timeout" in str(info.value)
    assert server.request_count == 2


async def test_connection_refused_is_retried_then_retryable(server: GeminiTestServer) -> None:
    with GeminiTestServer() as gone:
        url = gone.base_url
    a = GeminiAnalyzer(API_KEY, url, max_attempts=2, base_delay_s=0.001)
    try:
        with pytest.raises(AnalysisError) as info:
            await a.analyze(CALL, CONFIG)
    finally:
        await a.aclose()
    assert info.value.retryable is True


# ---- model output -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["text", "truncated", "missing"])
async def test_malformed_output_fails_without_retry(
    server: GeminiTestServer, analyzer: GeminiAnalyzer, mode: str
) -> None:
    server.malformed_next(1, mode=mode)
    with pytest.raises(AnalysisError) as info:
        await analyzer.analyze(CALL, CONFIG)
    assert info.value.retryable is False
    assert server.request_count == 1
    if mode == "missing":
        assert "summary" in str(info.value)


async def test_enum_value_outside_the_choices_fails_naming_the_field(
    server: GeminiTestServer, analyzer: GeminiAnalyzer
) -> None:
    server.malformed_next(1, mode="enum")
    with pytest.raises(AnalysisError) as info:
        await analyzer.analyze(CALL, CONFIG)
    assert "custom_data.reason" in str(info.value)
    assert info.value.retryable is False


async def test_unknown_sentiment_fails(server: GeminiTestServer, analyzer: GeminiAnalyzer) -> None:
    server.malformed_next(1, mode="enum")
    with pytest.raises(AnalysisError, match="user_sentiment"):
        await analyzer.analyze(CHAT, AnalysisConfig(model=MODEL))


@pytest.mark.parametrize("empty", [None, ""])
async def test_required_field_left_empty_makes_the_conversation_unsuccessful(
    server: GeminiTestServer, analyzer: GeminiAnalyzer, empty: str | None
) -> None:
    out = good_output()
    out["custom_data"] = {"order_id": empty, "reason": "late"}  # optional fields simply missing
    server.responder = lambda req: out
    outcome = await analyzer.analyze(CALL, CONFIG)
    assert outcome.successful is False
    assert outcome.custom_data == {"order_id": empty, "reason": "late", "refund_issued": None, "amount_usd": None}


async def test_responder_error_reply_is_a_gemini_error(server: GeminiTestServer, analyzer: GeminiAnalyzer) -> None:
    server.responder = lambda req: ErrorReply(400, "Unsupported model for this request.")
    with pytest.raises(AnalysisError, match="Unsupported model") as info:
        await analyzer.analyze(CALL, CONFIG)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("output", "field"),
    [
        ({"successful": "yes"}, "successful"),
        ({"summary": 3}, "summary"),
        ({"user_sentiment": "HAPPY"}, "user_sentiment"),
        ({"in_voicemail": None}, "in_voicemail"),
        ({"custom_data": None}, "custom_data"),
        ({"custom_data": {"amount_usd": True}}, "custom_data.amount_usd"),
        ({"custom_data": {"amount_usd": "12"}}, "custom_data.amount_usd"),
        ({"custom_data": {"refund_issued": "true"}}, "custom_data.refund_issued"),
        ({"custom_data": {"order_id": 1001}}, "custom_data.order_id"),
        ({"custom_data": {"reason": "Damaged"}}, "custom_data.reason"),
    ],
)
def test_parse_model_output_rejects_wrong_types(output: dict[str, object], field: str) -> None:
    with pytest.raises(AnalysisError, match=field.replace(".", r"\.")) as info:
        parse_model_output(json.dumps(good_output(**output)), CONFIG, "CALL")
    assert info.value.retryable is False


def test_parse_model_output_accepts_numbers_and_fills_missing_fields() -> None:
    parsed = parse_model_output(
        json.dumps(good_output(custom_data={"order_id": "A-1", "amount_usd": 3, "extra": "dropped"})), CONFIG, "CALL"
    )
    assert parsed["custom_data"] == {"order_id": "A-1", "reason": None, "refund_issued": None, "amount_usd": 3}
    chat = parse_model_output(json.dumps({"summary": "s", "successful": False, "user_sentiment": "UNKNOWN"}),
                              AnalysisConfig(model=MODEL), "CHAT")
    assert chat == {"summary": "s", "successful": False, "user_sentiment": "UNKNOWN", "in_voicemail": None,
                    "custom_data": {}, "evaluation": None, "rationale": None}
    with pytest.raises(AnalysisError, match="in_voicemail"):
        parse_model_output(json.dumps({"summary": "s", "successful": False, "user_sentiment": "UNKNOWN"}),
                           AnalysisConfig(model=MODEL), "CALL")
    with pytest.raises(AnalysisError, match="JSON object"):
        parse_model_output("[1, 2]", CONFIG, "CALL")


# ---- prompting helpers ----------------------------------------------------------------------------


def test_render_transcript_falls_back_to_the_transcript_text() -> None:
    assert render_transcript(CALL) == (
        "Agent: Hello, how can I help?\n"
        "User: My parcel A-1001 arrived broken, I want my money back.\n"
        "Agent: I have refunded 12.50 dollars."
    )
    assert render_transcript(CHAT) == "User: hi\nAgent: hello"
    assert render_transcript(Conversation(id="c", kind="CALL", transcript="  ")) == "(The conversation has no transcript.)"


def test_estimates_count_about_four_characters_per_token() -> None:
    assert [estimate_tokens(chars) for chars in (0, 3, 4, 5)] == [1, 1, 1, 2]
    transcripts = 2 * len(CALL.transcript)
    input_tokens, output_tokens = estimate_usage(CONFIG, "CALL", conversations=2, transcript_chars=transcripts)
    sent_with_each = estimate_tokens(len(build_system_instruction(CONFIG, "CALL"))) + estimate_tokens(
        len(json.dumps(build_response_schema(CONFIG, "CALL"), separators=(",", ":")))
    )
    assert input_tokens == 2 * sent_with_each + estimate_tokens(transcripts)
    fewer_fields = estimate_usage(AnalysisConfig(model=MODEL), "CALL", conversations=2, transcript_chars=transcripts)
    assert output_tokens > fewer_fields[1]
    assert estimate_usage(CONFIG, "CALL", conversations=0, transcript_chars=0) == (0, 0)


def test_parse_retry_delay() -> None:
    assert parse_retry_delay("2s") == 2.0
    assert parse_retry_delay("1.5s") == 1.5
    assert parse_retry_delay({"seconds": 1, "nanos": 500_000_000}) == 1.5
    assert parse_retry_delay("soon") is None


# ---- the test server itself ----------------------------------------------------------------------


def test_server_error_bodies_match_the_gemini_shape(server: GeminiTestServer) -> None:
    server.fail_next(1, status=429, retry_delay="1s")
    url = f"{server.base_url}/v1beta/models/{MODEL}:generateContent"
    r = httpx.post(url, json={"contents": [{"role": "user", "parts": [{"text": "User: hi"}]}]},
                   headers={"x-goog-api-key": API_KEY})
    assert r.status_code == 429
    assert r.json() == {"error": {
        "code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}],
    }}
    ok = httpx.post(url, json={"contents": [{"role": "user", "parts": [{"text": "User: hi"}]}]},
                    headers={"x-goog-api-key": API_KEY})
    assert ok.status_code == 200
    body = ok.json()
    assert json.loads(body["candidates"][0]["content"]["parts"][0]["text"]) == {}
    usage = body["usageMetadata"]
    assert usage["promptTokenCount"] == math.ceil(server.requests[-1].body_size / 4)
    assert httpx.get(f"{server.base_url}/v1beta/models").status_code == 404


async def test_server_answers_concurrent_requests_in_parallel(server: GeminiTestServer) -> None:
    import asyncio

    server.delay_s = 0.2
    a = make_analyzer(server)
    try:
        started = time.monotonic()
        outcomes = await asyncio.gather(*(a.analyze(CALL, CONFIG) for _ in range(20)))
    finally:
        await a.aclose()
    assert len(outcomes) == 20
    assert time.monotonic() - started < 1.0
    assert server.max_in_flight == 20


def test_recorded_requests_expose_what_the_client_sent(server: GeminiTestServer) -> None:
    seen: list[RecordedRequest] = []

    def responder(req: RecordedRequest) -> str:
        seen.append(req)
        return '{"ok": true}'

    server.responder = responder
    httpx.post(f"{server.base_url}/v1beta/models/m1:generateContent?key={API_KEY}", json={
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}],
        "generationConfig": {"responseSchema": {"type": "OBJECT"}},
    })
    [req] = server.requests
    assert seen == [req]
    assert (req.model, req.api_key, req.system_instruction, req.contents) == ("m1", API_KEY, "be brief", "ab")
    assert req.response_schema == {"type": "OBJECT"}
    assert (req.response_status, req.response_text) == (200, '{"ok": true}')
