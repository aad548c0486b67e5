"""A Gemini-compatible HTTP server on loopback for tests and benchmarks.

It answers `POST .../models/{model}:generateContent` like the Gemini API (candidates, usage metadata, error
bodies with RetryInfo), records what it received, and can be made slow, failing or malformed at runtime.
It also serves the Batch API with inline requests (create, get, list, cancel, delete) in the shapes google-genai
parses, answering each inline request as generateContent would.
It runs its own asyncio loop in a background thread, so sync and async tests (and the process under test)
share it. HTTP/1.1 with keep-alive over asyncio streams: no framework, so the per-request cost stays low.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    400: "Request contains an invalid argument.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
# google.rpc.Code of an HTTP status: a batch's inline errors and its operation error are google.rpc.Status bodies.
GRPC_CODES = {
    400: 3, 401: 16, 403: 7, 404: 5, 408: 4, 409: 10, 429: 8, 500: 13, 501: 12, 502: 14, 503: 14, 504: 4,
}
GRPC_CANCELLED = 1
MALFORMED_MODES = ("text", "enum", "truncated", "missing")
_GENERATE_SUFFIX = ":generateContent"
_BATCH_SUFFIX = ":batchGenerateContent"
_CANCEL_SUFFIX = ":cancel"
_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
_BATCH_OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
PENDING, RUNNING = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"
SUCCEEDED, FAILED = "BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED"
CANCELLED, EXPIRED = "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
ENDED_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
DEFAULT_LIST_PAGE_SIZE = 50


@dataclass
class RecordedRequest:
    """One request the server received (every attempt, failed ones included)."""

    method: str
    path: str
    model: str | None
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]
    system_instruction: str
    contents: str
    response_schema: dict[str, Any] | None
    received_at: float  # time.monotonic()
    seq: int = 0  # 1-based arrival order
    body_size: int = 0
    response_status: int | None = None  # set once the answer is decided
    response_text: str | None = None  # the model text of a 200 answer
    usage: tuple[int, int] | None = None  # (promptTokenCount, candidatesTokenCount) of a 200 answer
    batch: str | None = None  # the batch ("batches/<id>") an inline request came in, None for generateContent
    batch_key: str | None = None  # an inline request's metadata "key", when it has one

    @property
    def api_key(self) -> str | None:
        return _api_key(self.headers, self.path)

    @property
    def generation_config(self) -> dict[str, Any]:
        return self.body.get("generationConfig") or {}


def _api_key(headers: dict[str, str], target: str) -> str | None:
    key = headers.get("x-goog-api-key")
    if key is None:
        key = parse_qs(urlsplit(target).query).get("key", [None])[0]
    return key


@dataclass(frozen=True)
class BatchApiCall:
    """One call of the Batch API (create, get, list, cancel, delete) and the status it was answered with."""

    method: str
    path: str
    status: int
    received_at: float  # time.monotonic()


@dataclass
class _Batch:
    """A batch the server holds: its inline requests, what they were answered, and where it is in its life."""

    name: str  # "batches/<id>"
    model: str  # "models/<model>"
    display_name: str
    requests: list[RecordedRequest]
    metadata: list[Any]  # each inline request's metadata as sent, None where it had none
    created: float  # time.monotonic()
    create_time: str
    ends_as: str  # the state it reaches unless cancelled first: SUCCEEDED, FAILED or EXPIRED
    end_error: dict[str, Any] | None  # the operation error of a FAILED or EXPIRED end
    answered_before_end: int  # how many requests an EXPIRED batch answers first
    state: str = PENDING
    update_time: str = ""
    end_time: str | None = None
    error: dict[str, Any] | None = None
    answers: list[dict[str, Any] | None] = field(default_factory=list)  # InlinedResponse bodies, by request


def _timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rpc_status(status: int, message: str) -> dict[str, Any]:
    """A google.rpc.Status body, as a batch reports an inline request's or its own failure (no details: the SDK
    types them as strings)."""
    return {"code": GRPC_CODES.get(status, 2), "message": message}


def _sdk_body_size(request: dict[str, Any]) -> int:
    """The bytes google-genai sends for this GenerateContentRequest to generateContent (json.dumps, model in the
    URL), so an inline request is charged the tokens the same request costs interactively."""
    return len(json.dumps({k: v for k, v in request.items() if k != "model"}))


@dataclass(frozen=True)
class ErrorReply:
    """What a responder returns to answer with a Gemini error body instead of a result."""

    status: int
    message: str | None = None
    retry_delay: str | None = None


# A responder's answer: a dict (the model's JSON output), a str (the model's raw text), an ErrorReply,
# or None for the default answer.
Responder = Callable[[RecordedRequest], "dict[str, Any] | str | ErrorReply | None"]


def _text_of(content: Any) -> str:
    """The concatenated text parts of one Content or a list of them."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(c) for c in content)
    parts = content.get("parts") or []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


def _summary_for(contents: str) -> str:
    for line in contents.splitlines():
        if line.startswith("User:"):
            said = line[len("User:"):].strip()
            return f"The user said: {said}"[:200]
    return "A conversation between the agent and the user."


def example_from_schema(schema: dict[str, Any] | None, contents: str = "", *, _top: bool = True, _name: str = "") -> Any:
    """A deterministic value valid for `schema` (Gemini's OpenAPI subset), with the analysis presets filled in."""
    if not schema:
        return {}
    typ = str(schema.get("type", "OBJECT")).upper()
    enum = schema.get("enum")
    if enum:
        if _name == "user_sentiment" and "NEUTRAL" in enum:
            return "NEUTRAL"
        return enum[0]
    if typ == "OBJECT":
        props = schema.get("properties") or {}
        # google-genai sends "property_ordering" (snake case); the API accepts both spellings.
        order = schema.get("propertyOrdering") or schema.get("property_ordering") or list(props)
        return {
            name: example_from_schema(props[name], contents, _top=False, _name=name if _top else "")
            for name in order
            if name in props
        }
    if typ == "ARRAY":
        return [example_from_schema(schema.get("items") or {"type": "STRING"}, contents, _top=False)]
    if typ == "STRING":
        return _summary_for(contents) if _name == "summary" else "example"
    if typ == "BOOLEAN":
        return _name != "in_voicemail"
    if typ in ("NUMBER", "INTEGER"):
        low = schema.get("minimum")
        return low if low is not None and low > 1 else 1  # the lowest valid value from 1 up
    return None


def _malformed(mode: str, request: RecordedRequest) -> str:
    if mode == "text":
        return "Sure! Here is the analysis you asked for: the user was happy."
    good = example_from_schema(request.response_schema, request.contents)
    if mode == "truncated":
        return orjson.dumps(good).decode()[:-7]
    if mode == "missing":
        good.pop("summary", None)
        return orjson.dumps(good).decode()
    # "enum": the first custom ENUM field gets a value outside its choices, else the sentiment does.
    custom_props = ((request.response_schema or {}).get("properties", {}).get("custom_data") or {}).get("properties", {})
    for name, prop in custom_props.items():
        if prop.get("enum"):
            good["custom_data"][name] = "NOT_A_CHOICE"
            break
    else:
        good["user_sentiment"] = "NOT_A_CHOICE"
    return orjson.dumps(good).decode()


def error_body(status: int, message: str | None = None, retry_delay: str | None = None) -> dict[str, Any]:
    """The body the Gemini API sends with an error status."""
    error: dict[str, Any] = {
        "code": status,
        "message": message or _MESSAGES.get(status, f"HTTP {status}"),
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if retry_delay is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]
    return {"error": error}


def _ceil4(n: int) -> int:
    return max(1, math.ceil(n / 4))


class GeminiTestServer:
    """A Gemini-compatible server on 127.0.0.1 (ephemeral port) in a background thread.

    Use as a context manager or with start()/stop(); point google-genai at `base_url`.
    Knobs are plain attributes/methods safe to change from any thread while it runs:
    `delay_s`, `delay_next()`, `fail_next()`, `fail_always()`, `malformed_next()`, `responder`,
    `thoughts_tokens`, `record`. The HTTP knobs (delay, fail) apply to Batch API calls too; the batch knobs are
    `batch_delay_s`, `hold_batches()`/`release_batches()`, `fail_next_batch()`, `expire_next_batch()`,
    `fail_batch_requests_next()`, `batch_partial_results`, `batch_echo_metadata`, `batch_reverse_responses`.

    A batch is PENDING for the first half of `batch_delay_s`, then RUNNING, and ends at `batch_delay_s` (as seen
    by the next call that reads it). Its inline requests are recorded in `requests` when it is created, like
    generateContent requests, and answered (responder, malformed_next(), thoughts_tokens) when it runs.
    """

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        responder: Responder | None = None,
        expected_api_key: str | None = None,
        record: bool = True,
    ) -> None:
        self.delay_s = delay_s
        self.responder = responder
        # When set, any other key gets the 400 API_KEY_INVALID the real API answers with.
        self.expected_api_key = expected_api_key
        # Reported as usageMetadata.thoughtsTokenCount when above zero (2.5 models bill thinking as output).
        self.thoughts_tokens = 0
        # Benchmarks turn recording off to keep memory flat; counters still run.
        self.record = record
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._request_count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        # clear_requests() starts a new generation: answers still in flight from before it stop counting.
        self._generation = 0
        self._fail_queue: list[tuple[int, str | None]] = []
        self._fail_always: tuple[int, str | None] | None = None
        self._malformed_queue: list[str] = []
        self._delay_queue: list[float] = []
        # Batch API: how long a batch takes to end; whether a CANCELLED or EXPIRED batch still reports the answers
        # of the requests it got through (the API's Operation contract says an ended-with-error operation has no
        # response, so off by default); whether inline responses echo the request's metadata; whether they come
        # back in reverse order (the API keeps the input order: this shows a client matches by key).
        self.batch_delay_s = 0.05
        self.batch_partial_results = False
        self.batch_echo_metadata = True
        self.batch_reverse_responses = False
        self._batches: dict[str, _Batch] = {}
        self._batch_seq = 0
        self._batch_endings: list[tuple[str, dict[str, Any], int]] = []
        self._batch_request_failures: list[tuple[int, str | None]] = []
        self._hold_answered: int | None = None  # None: batches are not held
        self._batches_created = 0
        self._batches_cancelled = 0
        self._batch_requests_answered = 0
        self._batch_api_calls: list[BatchApiCall] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._port: int | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GeminiTestServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096, limit=2**20)
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="gemini-test-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._thread = None
            self._loop = None
            self._port = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def __enter__(self) -> GeminiTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- knobs -------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 429, retry_delay: str | None = None) -> None:
        """Answer the next `n` requests with `status` (and a RetryInfo `retryDelay` such as "1s" when given)."""
        with self._lock:
            self._fail_queue.extend([(status, retry_delay)] * n)

    def delay_next(self, n: int = 1, delay_s: float = 1.0) -> None:
        """Delay the next `n` answers by `delay_s` seconds (instead of the `delay_s` attribute)."""
        with self._lock:
            self._delay_queue.extend([delay_s] * n)

    def fail_always(self, status: int | None, retry_delay: str | None = None) -> None:
        """Answer every request with `status` until called with None."""
        with self._lock:
            self._fail_always = None if status is None else (status, retry_delay)

    def malformed_next(self, n: int = 1, mode: str = "text") -> None:
        """Answer the next `n` requests with bad model output.

        Modes: "text" (not JSON), "enum" (an enum value outside its choices), "truncated" (cut-off JSON),
        "missing" (no summary).
        """
        if mode not in MALFORMED_MODES:
            raise ValueError(f"mode must be one of {MALFORMED_MODES}")
        with self._lock:
            self._malformed_queue.extend([mode] * n)

    def hold_batches(self, answered: int = 0) -> None:
        """Keep every batch from ending until release_batches(): it goes RUNNING and answers its first `answered`
        requests, then waits (to cancel a batch mid-way, or to watch it run)."""
        if answered < 0:
            raise ValueError("answered must be zero or more")
        with self._lock:
            self._hold_answered = answered

    def release_batches(self) -> None:
        """Let held batches run to their end."""
        with self._lock:
            self._hold_answered = None

    def fail_next_batch(self, message: str | None = None, status: int = 500) -> None:
        """The next batch created ends FAILED as a whole, with this operation error and no responses."""
        error = _rpc_status(status, message or "The batch failed: an internal error has occurred.")
        with self._lock:
            self._batch_endings.append(("FAILED", error, 0))

    def expire_next_batch(self, answered: int = 0) -> None:
        """The next batch created ends EXPIRED after answering its first `answered` requests (its answers are reported
        only with `batch_partial_results`)."""
        error = _rpc_status(504, "The batch expired before it completed.")
        with self._lock:
            self._batch_endings.append(("EXPIRED", error, answered))

    def fail_batch_requests_next(self, n: int = 1, status: int = 500, message: str | None = None) -> None:
        """Answer the next `n` inline requests a batch answers with an error (a google.rpc.Status carrying `status`'s
        code) instead of a response."""
        with self._lock:
            self._batch_request_failures.extend([(status, message)] * n)

    def clear_failures(self) -> None:
        with self._lock:
            self._fail_queue.clear()
            self._fail_always = None
            self._malformed_queue.clear()
            self._delay_queue.clear()
            self._batch_endings.clear()
            self._batch_request_failures.clear()

    def reset(self) -> None:
        """Back to a fresh server: no failures, no delay, no responder, nothing recorded, no batches."""
        self.clear_failures()
        self.delay_s = 0.0
        self.responder = None
        self.thoughts_tokens = 0
        self.batch_delay_s = 0.05
        self.batch_partial_results = False
        self.batch_echo_metadata = True
        self.batch_reverse_responses = False
        self.release_batches()
        self.clear_requests()
        self.clear_batches()

    # ---- what was received -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """Requests received, recorded or not."""
        with self._lock:
            return self._request_count

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was answering at the same time."""
        with self._lock:
            return self._max_in_flight

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._request_count = 0
            self._max_in_flight = 0
            self._in_flight = 0
            self._generation += 1

    @property
    def batches_created(self) -> int:
        with self._lock:
            return self._batches_created

    @property
    def batches_cancelled(self) -> int:
        """Batches a cancel call ended (a cancel of an ended batch changes nothing and is not counted)."""
        with self._lock:
            return self._batches_cancelled

    @property
    def batch_requests_answered(self) -> int:
        """Inline requests answered (with a response or an error)."""
        with self._lock:
            return self._batch_requests_answered

    @property
    def batch_api_calls(self) -> list[BatchApiCall]:
        """The Batch API calls received (when recording), oldest first."""
        with self._lock:
            return list(self._batch_api_calls)

    def batch_state(self, name: str) -> str | None:
        """A batch's state as the API last reported it (BATCH_STATE_...), None for an unknown or deleted batch."""
        with self._lock:
            batch = self._batches.get(name)
            return batch.state if batch is not None else None

    def clear_batches(self) -> None:
        """Forget every batch and the Batch API counters."""
        with self._lock:
            self._batches.clear()
            self._batches_created = 0
            self._batches_cancelled = 0
            self._batch_requests_answered = 0
            self._batch_api_calls.clear()

    # ---- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                try:
                    if headers.get("transfer-encoding", "").lower() == "chunked":
                        body = await self._read_chunked(reader)
                    else:
                        body = await reader.readexactly(int(headers.get("content-length") or 0))
                except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                    return
                status, payload = await self._answer(method, target, headers, body)
                keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=UTF-8\r\n"
                    b"Content-Length: %d\r\n%s\r\n"
                    % (status, _REASONS.get(status, "Error").encode(), len(payload),
                       b"" if keep_alive else b"Connection: close\r\n")
                    + payload
                )
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def _answer(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        path = unquote(urlsplit(target).path)
        if method != "POST" or not path.endswith(_GENERATE_SUFFIX) or "/models/" not in path:
            return await self._answer_batch_api(method, target, path, headers, body=raw)
        model = path[path.rindex("/models/") + len("/models/"): -len(_GENERATE_SUFFIX)]
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return 400, orjson.dumps(error_body(400, "Invalid JSON payload received."))
        gen = body.get("generationConfig") or {}
        request = RecordedRequest(
            method=method,
            path=target,
            model=model,
            headers=headers,
            body=body,
            system_instruction=_text_of(body.get("systemInstruction")),
            contents=_text_of(body.get("contents")),
            response_schema=gen.get("responseSchema"),
            received_at=time.monotonic(),
            body_size=len(raw),
        )
        with self._lock:
            self._request_count += 1
            request.seq = self._request_count
            generation = self._generation
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if self.record:
                self._requests.append(request)
            failure = self._fail_always or (self._fail_queue.pop(0) if self._fail_queue else None)
            malformed = None
            if failure is None and self._malformed_queue:
                malformed = self._malformed_queue.pop(0)
            delay = self._delay_queue.pop(0) if self._delay_queue else self.delay_s
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            status, payload = self._reply(request, failure, malformed)
        finally:
            with self._lock:
                if generation == self._generation:
                    self._in_flight -= 1
        request.response_status = status
        return status, payload

    def _reply(
        self, request: RecordedRequest, failure: tuple[int, str | None] | None, malformed: str | None
    ) -> tuple[int, bytes]:
        if failure is not None:
            return failure[0], orjson.dumps(error_body(failure[0], retry_delay=failure[1]))
        if self.expected_api_key is not None and request.api_key != self.expected_api_key:
            return 400, orjson.dumps(error_body(400, "API key not valid. Please pass a valid API key."))
        status, payload = self._model_answer(request, malformed)
        return status, orjson.dumps(payload)

    def _model_answer(self, request: RecordedRequest, malformed: str | None) -> tuple[int, dict[str, Any]]:
        """What the model answers one request, interactive or inline: (200, a GenerateContentResponse) or an error
        status with its body."""
        if malformed is not None:
            text = _malformed(malformed, request)
        else:
            try:
                answer = self.responder(request) if self.responder is not None else None
            except Exception as exc:  # a broken responder shows up as a 500 the test can read
                return 500, error_body(500, f"responder failed: {exc!r}")
            if isinstance(answer, ErrorReply):
                return answer.status, error_body(answer.status, answer.message, answer.retry_delay)
            if answer is None:
                answer = example_from_schema(request.response_schema, request.contents)
            text = answer if isinstance(answer, str) else orjson.dumps(answer).decode()
        # Deterministic usage from the sizes: about four bytes per token, like the estimate.
        prompt_tokens, output_tokens = _ceil4(request.body_size), _ceil4(len(text))
        usage: dict[str, int] = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens}
        thoughts = self.thoughts_tokens
        if thoughts > 0:
            usage["thoughtsTokenCount"] = thoughts
        usage["totalTokenCount"] = prompt_tokens + output_tokens + max(0, thoughts)
        request.response_text, request.usage = text, (prompt_tokens, output_tokens)
        return 200, {
            "candidates": [
                {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": usage,
            "modelVersion": request.model,
            "responseId": f"test-{request.seq}",
        }

    # ---- Batch API ---------------------------------------------------------------------------

    def _batch_route(self, method: str, path: str) -> tuple[Callable[..., tuple[int, dict[str, Any]]], str] | None:
        """The handler of a Batch API call and its argument (the model, or the batch's name), None if not one."""
        if method == "POST" and path.endswith(_BATCH_SUFFIX) and "/models/" in path:
            return self._create_batch, path[path.rindex("/models/") + len("/models/"): -len(_BATCH_SUFFIX)]
        _, found, rest = path.rpartition("/batches")
        if not found:
            return None
        if rest == "":
            return (self._list_batches, "") if method == "GET" else None
        batch_id = rest[1:]
        if not rest.startswith("/") or not batch_id or "/" in batch_id:
            return None
        if method == "POST" and batch_id.endswith(_CANCEL_SUFFIX):
            return self._cancel_batch, "batches/" + batch_id[: -len(_CANCEL_SUFFIX)]
        if ":" in batch_id:
            return None
        if method == "GET":
            return self._get_batch, "batches/" + batch_id
        if method == "DELETE":
            return self._delete_batch, "batches/" + batch_id
        return None

    async def _answer_batch_api(
        self, method: str, target: str, path: str, headers: dict[str, str], *, body: bytes
    ) -> tuple[int, bytes]:
        route = self._batch_route(method, path)
        if route is None:
            return 404, orjson.dumps(error_body(404, f"{method} {path} is not served by the Gemini test server"))
        received_at = time.monotonic()
        with self._lock:
            failure = self._fail_always or (self._fail_queue.pop(0) if self._fail_queue else None)
            delay = self._delay_queue.pop(0) if self._delay_queue else self.delay_s
        if failure is not None:
            status, payload = failure[0], error_body(failure[0], retry_delay=failure[1])
        elif self.expected_api_key is not None and _api_key(headers, target) != self.expected_api_key:
            status, payload = 400, error_body(400, "API key not valid. Please pass a valid API key.")
        else:
            handler, argument = route
            status, payload = handler(argument, target=target, headers=headers, body=body)
        if self.record:
            with self._lock:
                self._batch_api_calls.append(BatchApiCall(method, target, status, received_at))
        if delay > 0:
            # After the effect: a delayed answer to a create is a batch made whose answer came too late.
            await asyncio.sleep(delay)
        return status, orjson.dumps(payload)

    def _create_batch(
        self, model: str, *, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        try:
            parsed = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return 400, error_body(400, "Invalid JSON payload received.")
        batch_body = parsed.get("batch") if isinstance(parsed, dict) else None
        if not isinstance(batch_body, dict):
            return 400, error_body(400, "batch is required.")
        display_name = batch_body.get("displayName")
        input_config = batch_body.get("inputConfig") or {}
        if not display_name:
            return 400, error_body(400, "batch.display_name is required.")
        if input_config.get("fileName"):
            return 501, error_body(501, "The Gemini test server takes inline requests only.")
        inline = (input_config.get("requests") or {}).get("requests")
        if not isinstance(inline, list) or not inline:
            return 400, error_body(400, "batch.input_config.requests.requests must not be empty.")
        now, stamp = time.monotonic(), _timestamp()
        with self._lock:
            self._batch_seq += 1
            name = f"batches/{secrets.token_hex(6)}{self._batch_seq}"
            ends_as, end_error, answered_before_end = (
                self._batch_endings.pop(0) if self._batch_endings else ("SUCCEEDED", None, 0)
            )
            recorded, metadata = [], []
            for item in inline:
                request = item.get("request") or {}
                meta = item.get("metadata")
                key = meta.get("key") if isinstance(meta, dict) else None
                generation = request.get("generationConfig") or {}
                self._request_count += 1
                recorded.append(RecordedRequest(
                    method="POST",
                    path=target,
                    model=str(request.get("model") or model).removeprefix("models/"),
                    headers=headers,
                    body=request,
                    system_instruction=_text_of(request.get("systemInstruction")),
                    contents=_text_of(request.get("contents")),
                    response_schema=generation.get("responseSchema"),
                    received_at=now,
                    seq=self._request_count,
                    body_size=_sdk_body_size(request),
                    batch=name,
                    batch_key=None if key is None else str(key),
                ))
                metadata.append(meta)
            if self.record:
                self._requests.extend(recorded)
            batch = _Batch(
                name=name, model=f"models/{model.removeprefix('models/')}", display_name=str(display_name),
                requests=recorded, metadata=metadata, created=now, create_time=stamp, update_time=stamp,
                ends_as=ends_as, end_error=end_error, answered_before_end=answered_before_end,
                answers=[None] * len(recorded),
            )
            self._batches[name] = batch
            self._batches_created += 1
        return 200, self._operation(batch)

    def _find_batch(self, name: str) -> _Batch | None:
        with self._lock:
            batch = self._batches.get(name)
        if batch is not None:
            self._advance(batch)
        return batch

    def _get_batch(self, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        batch = self._find_batch(name)
        if batch is None:
            return 404, error_body(404, "Requested entity was not found.")
        return 200, self._operation(batch)

    def _cancel_batch(self, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        batch = self._find_batch(name)
        if batch is None:
            return 404, error_body(404, "Requested entity was not found.")
        if batch.state not in ENDED_STATES:
            self._end(batch, CANCELLED, {"code": GRPC_CANCELLED, "message": "The batch was cancelled."})
            with self._lock:
                self._batches_cancelled += 1
        return 200, {}

    def _delete_batch(self, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self._batches.pop(name, None)
        if batch is None:
            return 404, error_body(404, "Requested entity was not found.")
        return 200, {}

    def _list_batches(self, _: str, *, target: str, **__: Any) -> tuple[int, dict[str, Any]]:
        query = parse_qs(urlsplit(target).query)
        try:
            size = int(query.get("pageSize", [DEFAULT_LIST_PAGE_SIZE])[0]) or DEFAULT_LIST_PAGE_SIZE
            start = int(query.get("pageToken", ["0"])[0] or 0)
        except ValueError:
            return 400, error_body(400, "Invalid page size or page token.")
        if size < 0 or start < 0:
            return 400, error_body(400, "Invalid page size or page token.")
        with self._lock:
            newest_first = sorted(self._batches.values(), key=lambda b: b.created, reverse=True)
        page = newest_first[start: start + min(size, 1000)]
        for batch in page:
            self._advance(batch)
        answer: dict[str, Any] = {}
        if page:
            answer["operations"] = [self._operation(batch) for batch in page]
        if start + len(page) < len(newest_first):
            answer["nextPageToken"] = str(start + len(page))
        return 200, answer

    def _advance(self, batch: _Batch) -> None:
        """Bring a batch to where its age and the knobs put it: PENDING, then RUNNING (answering its requests),
        then its end. Runs on the server's loop only, so two calls never advance a batch at once."""
        if batch.state in ENDED_STATES:
            return
        elapsed = time.monotonic() - batch.created
        with self._lock:
            delay, held = self.batch_delay_s, self._hold_answered
        if elapsed < delay / 2:
            return
        if batch.state == PENDING:
            batch.state, batch.update_time = RUNNING, _timestamp()
        to_answer = {"SUCCEEDED": len(batch.requests), "FAILED": 0, "EXPIRED": batch.answered_before_end}[batch.ends_as]
        if held is not None:
            to_answer = min(to_answer, held)
        for index in range(min(to_answer, len(batch.requests))):
            if batch.answers[index] is None:
                batch.answers[index] = self._answer_inline(batch.requests[index])
        if held is None and elapsed >= delay:
            self._end(batch, "BATCH_STATE_" + batch.ends_as, batch.end_error)

    def _answer_inline(self, request: RecordedRequest) -> dict[str, Any]:
        """One inline request's InlinedResponse body (without metadata): a response, or an error."""
        with self._lock:
            failure = self._batch_request_failures.pop(0) if self._batch_request_failures else None
            malformed = self._malformed_queue.pop(0) if failure is None and self._malformed_queue else None
            self._batch_requests_answered += 1
        if failure is not None:
            status, payload = failure[0], error_body(failure[0], failure[1])
        else:
            status, payload = self._model_answer(request, malformed)
        request.response_status = status
        if status == 200:
            return {"response": payload}
        return {"error": _rpc_status(status, payload["error"]["message"])}

    @staticmethod
    def _end(batch: _Batch, state: str, error: dict[str, Any] | None) -> None:
        batch.state, batch.error = state, error
        batch.end_time = batch.update_time = _timestamp()

    def _operation(self, batch: _Batch) -> dict[str, Any]:
        """The batch as the API shows it: an Operation whose metadata is the GenerateContentBatch."""
        answered = [a for a in batch.answers if a is not None]
        failed = sum(1 for a in answered if "error" in a)
        stats = {
            "requestCount": str(len(batch.requests)),
            "successfulRequestCount": str(len(answered) - failed),
            "failedRequestCount": str(failed),
            "pendingRequestCount": str(len(batch.requests) - len(answered)),
        }
        metadata: dict[str, Any] = {
            "@type": _BATCH_TYPE,
            "model": batch.model,
            "displayName": batch.display_name,
            "createTime": batch.create_time,
            "updateTime": batch.update_time,
            # int64 counts are strings in JSON, and proto3 leaves zeros out.
            "batchStats": {k: v for k, v in stats.items() if v != "0" or k == "requestCount"},
            "state": batch.state,
            "name": batch.name,
        }
        operation: dict[str, Any] = {"name": batch.name, "metadata": metadata}
        if batch.state not in ENDED_STATES:
            return operation
        metadata["endTime"] = batch.end_time
        operation["done"] = True
        reports = batch.state == SUCCEEDED or (batch.state in (CANCELLED, EXPIRED) and self.batch_partial_results)
        if reports:
            responses = []
            for answer, meta in zip(batch.answers, batch.metadata):
                if answer is not None:
                    responses.append({**answer, "metadata": meta} if meta is not None and self.batch_echo_metadata
                                     else answer)
            if self.batch_reverse_responses:
                responses.reverse()
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
        if batch.state == SUCCEEDED:
            operation["response"] = {"@type": _BATCH_OUTPUT_TYPE, **metadata["output"]}
        else:
            operation["error"] = batch.error
        return operation
