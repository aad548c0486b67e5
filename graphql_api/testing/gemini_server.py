"""A Gemini-compatible HTTP server on loopback for tests and benchmarks.

It answers `POST .../models/{model}:generateContent` like the Gemini API (candidates, usage metadata, error
bodies with RetryInfo), records what it received, and can be made slow, failing or malformed at runtime.
It runs its own asyncio loop in a background thread, so sync and async tests (and the process under test)
share it. HTTP/1.1 with keep-alive over asyncio streams: no framework, so the per-request cost stays low.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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
MALFORMED_MODES = ("text", "enum", "truncated", "missing")
_GENERATE_SUFFIX = ":generateContent"


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

    @property
    def api_key(self) -> str | None:
        key = self.headers.get("x-goog-api-key")
        if key is None:
            key = parse_qs(urlsplit(self.path).query).get("key", [None])[0]
        return key

    @property
    def generation_config(self) -> dict[str, Any]:
        return self.body.get("generationConfig") or {}


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
        return 1
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
    `thoughts_tokens`, `record`.
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
        self._fail_queue: list[tuple[int, str | None]] = []
        self._fail_always: tuple[int, str | None] | None = None
        self._malformed_queue: list[str] = []
        self._delay_queue: list[float] = []
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

    def clear_failures(self) -> None:
        with self._lock:
            self._fail_queue.clear()
            self._fail_always = None
            self._malformed_queue.clear()
            self._delay_queue.clear()

    def reset(self) -> None:
        """Back to a fresh server: no failures, no delay, no responder, nothing recorded."""
        self.clear_failures()
        self.delay_s = 0.0
        self.responder = None
        self.thoughts_tokens = 0
        self.clear_requests()

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
            return 404, orjson.dumps(error_body(404, f"{method} {path} is not served by the Gemini test server"))
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
        if malformed is not None:
            text = _malformed(malformed, request)
        else:
            try:
                answer = self.responder(request) if self.responder is not None else None
            except Exception as exc:  # a broken responder shows up as a 500 the test can read
                return 500, orjson.dumps(error_body(500, f"responder failed: {exc!r}"))
            if isinstance(answer, ErrorReply):
                return answer.status, orjson.dumps(error_body(answer.status, answer.message, answer.retry_delay))
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
        return 200, orjson.dumps(
            {
                "candidates": [
                    {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}
                ],
                "usageMetadata": usage,
                "modelVersion": request.model,
                "responseId": f"test-{request.seq}",
            }
        )
