"""The Gemini analyzer: one google-genai async request per conversation, our own retries, strict output parsing.

The SDK's retries are switched off (HttpRetryOptions(attempts=1)) so this module is the only place that
decides whether to try again (with tenacity): 429/408/5xx and transport errors are retried with exponential backoff
and jitter, honouring the server's RetryInfo; any other 4xx fails at once. The batch client (batch.py) shares the
policy (GeminiCaller), the request config and the answer parsing.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from google import genai
from google.genai import errors, types
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from graphql_api.analysis.base import (
    AnalysisConfig,
    AnalysisError,
    AnalysisOutcome,
    Conversation,
    ConversationKind,
    Usage,
    apply_required_fields,
)
from graphql_api.analysis.prompting import (
    build_response_schema,
    build_system_instruction,
    parse_model_output,
    render_transcript,
)

logger = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 429})  # plus every 5xx


def _transport_errors() -> tuple[type[BaseException], ...]:
    # google-genai sends through httpx2 when installed, else httpx; catch both families.
    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()


def _limits(max_connections: int | None) -> dict[str, Any]:
    """Pool limits for the SDK's async httpx client; None keeps httpx's default (100 connections, 20 idle).

    The default measured fastest up to 100 in flight (httpcore scans every pooled connection per request);
    raise it only to have more than 100 requests in flight per process.
    """
    if max_connections is None:
        return {}
    backend = os.environ.get("GOOGLE_GENAI_HTTP_CLIENT", "").strip().lower()
    for module in (("httpx",) if backend == "httpx" else ("httpx2", "httpx")):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        return {"limits": mod.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)}
    return {}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")


def parse_retry_delay(value: Any) -> float | None:
    """Seconds from a protobuf Duration as JSON ("2s", "1.5s") or as {"seconds": .., "nanos": ..}."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        return float(match.group(1)) if match else None
    if isinstance(value, dict):
        try:
            return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def server_retry_delay(exc: errors.APIError) -> float | None:
    """The delay the server asked for: google.rpc.RetryInfo in the error details, else a Retry-After header."""
    body = exc.details if isinstance(exc.details, dict) else {}
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = parse_retry_delay(detail.get("retryDelay"))
            if delay is not None:
                return delay
    headers = getattr(exc.response, "headers", None)
    retry_after = headers.get("retry-after") if headers is not None else None
    if retry_after:
        try:
            return float(retry_after)
        except ValueError:
            return None
    return None


def is_retryable_status(status: int | None) -> bool:
    return status is not None and (status in RETRYABLE_STATUSES or 500 <= status <= 599)


@functools.lru_cache(maxsize=128)
def request_config(config: AnalysisConfig, kind: ConversationKind) -> types.GenerateContentConfig:
    """The generation config sent for (config, kind), built once.

    A rerun analyzes thousands of conversations with one config snapshot, and validating the schema into the
    SDK's pydantic types costs more than the rest of our per-request work. The SDK only reads this object.
    """
    return types.GenerateContentConfig(
        system_instruction=build_system_instruction(config, kind),
        response_mime_type="application/json",
        response_schema=types.Schema.model_validate(build_response_schema(config, kind)),
        temperature=0,
    )


def make_client(api_key: str, base_url: str | None, *, request_timeout_s: float,
                max_connections: int | None = None) -> genai.Client:
    """A Gemini Developer API client whose own retries are off, so the caller's policy is the only one."""
    return genai.Client(
        api_key=api_key,
        vertexai=False,
        http_options=types.HttpOptions(
            base_url=base_url,
            timeout=max(1, round(request_timeout_s * 1000)),
            # attempts=1 turns tenacity off; a non-None retry_options also stops the SDK's implicit
            # sleep-and-retry on aiohttp connection errors. Our callers' retry loops are the only retry.
            retry_options=types.HttpRetryOptions(attempts=1),
            async_client_args=_limits(max_connections) or None,
        ),
    )


def parse_response(response: types.GenerateContentResponse, conversation: Conversation,
                   config: AnalysisConfig) -> AnalysisOutcome:
    """The typed outcome of one model answer (an interactive one or a batch's inline one), with its usage.

    Raises a non-retryable AnalysisError carrying the usage when the model answered without usable output:
    its tokens are charged all the same.
    """
    usage = response.usage_metadata
    input_tokens = (usage.prompt_token_count or 0) if usage else 0
    # Thinking tokens are billed at the output price, so they count as output.
    output_tokens = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0
    spent = Usage(config.model, input_tokens, output_tokens)
    text = response.text
    if not text:
        candidate = response.candidates[0] if response.candidates else None
        reason = candidate.finish_reason if candidate else getattr(response.prompt_feedback, "block_reason", None)
        raise AnalysisError(f"gemini returned no text for {conversation.id} (reason: {reason})", usage=spent)
    try:
        parsed = parse_model_output(text, config, conversation.kind, render_transcript(conversation))
    except AnalysisError as exc:
        exc.usage = spent  # the model answered: its tokens are charged even though the answer is unusable
        raise
    outcome = AnalysisOutcome(
        model=config.model,
        summary=parsed["summary"],
        successful=parsed["successful"],
        user_sentiment=parsed["user_sentiment"],
        in_voicemail=parsed["in_voicemail"],
        custom_data=parsed["custom_data"],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        evaluation=parsed["evaluation"],
        rationale=parsed["rationale"],
    )
    return apply_required_fields(outcome, config)


class _Retryable(Exception):
    """A failed attempt worth another: a 429, 408 or 5xx answer (with the delay the server asked for), or a transport
    error."""

    def __init__(self, status: int | None, reason: str, server_delay: float | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.server_delay = server_delay


# What a google-genai call raises when it fails; classify_failure says what each means.
CALL_FAILURES: tuple[type[BaseException], ...] = (errors.APIError, errors.UnknownApiResponseError, *_TRANSPORT_ERRORS)


def classify_failure(exc: BaseException, subject: str) -> Exception:
    """What a failed google-genai call (one of CALL_FAILURES) about `subject` means: _Retryable for a failure worth
    another attempt (429, 408, 5xx, transport), else a non-retryable AnalysisError to raise at once."""
    if isinstance(exc, errors.APIError):
        reason = f"{exc.code} {exc.status}: {exc.message}"
        if not is_retryable_status(exc.code):
            return AnalysisError(f"gemini rejected the request for {subject}: {reason}", retryable=False, status=exc.code)
        return _Retryable(exc.code, reason, server_retry_delay(exc))
    if isinstance(exc, errors.UnknownApiResponseError):
        return AnalysisError(f"gemini answered {subject} with a non-JSON body: {exc}")
    return _Retryable(None, f"{type(exc).__name__}: {exc}".rstrip(": "))


def _failure(state: RetryCallState) -> _Retryable:
    # tenacity waits and logs only after an attempt that raised _Retryable.
    return cast(_Retryable, state.outcome.exception())  # type: ignore[union-attr]


class GeminiCaller:
    """A google-genai client whose own retries are off, and the retry policy that replaces them: what the interactive
    analyzer and the batch client share, so both retry alike."""

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        max_attempts: int = 5,
        request_timeout_s: float = 60.0,
        base_delay_s: float = 0.5,
        max_delay_s: float = 20.0,
        max_connections: int | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.request_timeout_s = request_timeout_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._sleep = sleep
        self._jitter = jitter
        self._client = make_client(api_key, base_url, request_timeout_s=request_timeout_s,
                                   max_connections=max_connections)

    async def aclose(self) -> None:
        await self._client.aio.aclose()

    def backoff_delay(self, attempt: int, server_delay: float | None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based)."""
        if server_delay is not None:
            # At least what the server asked for, plus up to 10% so a burst of clients does not retry in step.
            delay = server_delay * (1 + 0.1 * self._jitter())
        else:
            ceiling = self.base_delay_s * (2 ** (attempt - 1))
            delay = ceiling / 2 + ceiling / 2 * self._jitter()  # "equal jitter"
        return min(self.max_delay_s, delay)

    def _wait(self, state: RetryCallState) -> float:
        return self.backoff_delay(state.attempt_number, _failure(state).server_delay)

    async def _call(self, subject: str, call: Callable[[], Awaitable[T]], /, *, log: Any = logger,
                    event: str = "gemini_retry", **context: Any) -> T:
        """`call` (one google-genai request about `subject`) under the retry policy; `event` with `context` is logged
        before each retry. Raises AnalysisError: retryable once the attempts are spent, at once for any other 4xx."""

        def log_retry(state: RetryCallState) -> None:
            failure = _failure(state)
            log.warning(
                event, **context, attempt=state.attempt_number, max_attempts=self.max_attempts, status=failure.status,
                delay_s=round(state.next_action.sleep, 3),  # type: ignore[union-attr]
                server_delay_s=failure.server_delay, reason=failure.reason,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts), wait=self._wait, retry=retry_if_exception_type(_Retryable),
            before_sleep=log_retry, sleep=self._sleep, reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await call()
                    except CALL_FAILURES as exc:
                        raise classify_failure(exc, subject) from exc
        except _Retryable as failed:
            raise AnalysisError(
                f"gemini failed for {subject} after {self.max_attempts} attempts: {failed.reason}",
                retryable=True,
                status=failed.status,
            ) from failed.__cause__
        raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover


class GeminiAnalyzer(GeminiCaller):
    """Analyzes a conversation with a Gemini model through google-genai's async client."""

    name = "gemini"

    async def analyze(self, conversation: Conversation, config: AnalysisConfig) -> AnalysisOutcome:
        generation_config = request_config(config, conversation.kind)
        contents = render_transcript(conversation)
        response = await self._call(
            conversation.id,
            lambda: self._client.aio.models.generate_content(
                model=config.model, contents=contents, config=generation_config
            ),
            conversation_id=conversation.id,
        )
        return parse_response(response, conversation, config)
