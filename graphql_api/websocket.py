"""GraphQL over WebSocket: the protocol handlers of graphql-transport-ws and graphql-ws, with our rules on top of
Strawberry's: every error coded, a socket acknowledged only with a valid key, caps on sockets (per process and per
key), operations per socket, message size and the wait for connection_init, and a revoked key's sockets closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from json import JSONDecodeError
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler, Operation
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
import structlog

from graphql_api.schema.execution import shared_event_sink
from graphql_api.workspaces import PREFIX_LENGTH, bearer_key

if TYPE_CHECKING:
    from graphql_api.config import Settings
    from graphql_api.schema.context import Context
    from graphql_api.services import Services

log = structlog.stdlib.get_logger(__name__)

# Close codes. 4403 and 4408 are graphql-transport-ws's own (graphql-ws has none: it gets them too, after a
# coded connection_error); 4429 is the protocol's "too many" code, used here for the socket caps; 1009 is RFC 6455's.
CLOSE_FORBIDDEN = 4403  # missing, wrong or revoked key
CLOSE_INIT_TIMEOUT = 4408  # no connection_init within ws_init_timeout_s
CLOSE_TOO_MANY = 4429  # a socket cap: ws_max_sockets or ws_max_sockets_per_key (and a second connection_init)
CLOSE_MESSAGE_TOO_BIG = 1009  # a message over max_ws_message_bytes
CLOSE_INTERNAL_ERROR = 1011  # connection_init could not be checked (the database is away)


class SocketRefused(Exception):
    """A socket that may not go on: closed with `close_code` and `reason` (graphql-ws first gets a connection_error
    with `payload`, a coded GraphQL error)."""

    def __init__(self, close_code: int, reason: str, message: str, code: str, **extensions: Any):
        super().__init__(message)
        self.close_code = close_code
        self.reason = reason  # at most 123 bytes (a WebSocket close frame's limit)
        self.counted_as = extensions.get("limit", code.lower())
        self.payload = {"message": message, "extensions": {"code": code, **extensions}}


def _forbidden(detail: str, message: str) -> SocketRefused:
    return SocketRefused(CLOSE_FORBIDDEN, f"Forbidden: {detail}", message, "UNAUTHENTICATED")


def _too_many(what: str, limit: str, value: int) -> SocketRefused:
    return SocketRefused(
        CLOSE_TOO_MANY, f"Too many sockets {what}: {limit}={value}", f"Too many sockets {what} ({limit}={value}).",
        "LIMIT_EXCEEDED", limit=limit, value=value,
    )


def _session(context: Context) -> int:
    # A connection's token in the authenticator's sessions. The context lives as long as its connection's handler,
    # which ends the session before it goes, so the id is never another connection's while the session is open.
    return id(context)


async def admit(context: Context) -> None:
    """The view's on_ws_connect: authenticate the key of connection_init and hold the socket's place under the
    per-key cap. Raises SocketRefused; the socket is acknowledged only when this returns."""
    services: Services = context.services
    params = context.connection_params if isinstance(context.connection_params, dict) else {}
    authorization = params.get("Authorization") or params.get("authorization")
    if not authorization:
        raise _forbidden("API key missing", 'Send your API key in connection_init: {"Authorization": "Bearer <key>"}.')
    key = bearer_key(authorization) if isinstance(authorization, str) else None
    if key is None:
        raise _forbidden("malformed Authorization", "The Authorization value must be `Bearer <API key>`.")
    identity = await services.authenticator.identify(key)
    if identity is None:
        raise _forbidden("API key unknown or revoked", "The API key is not valid (unknown or revoked).")
    sessions = services.authenticator.sessions
    cap = services.settings.ws_max_sockets_per_key
    if sessions.count(identity.key_id) >= cap:
        raise _too_many("for this API key", "ws_max_sockets_per_key", cap)
    context.workspace = identity.workspace
    context.key_prefix = key[:PREFIX_LENGTH]
    sessions.bind(_session(context), identity.key_id)


def socket_metrics(services: Services) -> Iterator[Metric]:
    """Socket metrics for /metrics: sockets open now (admitted or not), admitted ones and their keys, refusals by
    reason, sockets closed by a revocation."""
    sessions = services.authenticator.sessions
    yield GaugeMetricFamily("graphql_ws_sockets_open", "WebSocket connections open in this process, acknowledged or not.",
                            value=sessions.count())
    yield GaugeMetricFamily("graphql_ws_sockets_authenticated", "WebSocket connections acknowledged with an API key.",
                            value=sessions.admitted)
    yield GaugeMetricFamily("graphql_ws_api_keys_connected", "API keys with at least one WebSocket connection open.",
                            value=len(sessions.key_ids))
    refused = CounterMetricFamily("graphql_ws_sockets_refused", "WebSocket connections refused at admission, by reason "
                                  "(a cap or unauthenticated).", labels=["reason"])
    for reason, count in sorted(sessions.refused.items()):
        refused.add_metric([reason], count)
    yield refused
    yield CounterMetricFamily("graphql_ws_sockets_revoked", "WebSocket connections closed because their API key was revoked.",
                              value=sessions.revoked_closed)


class _GuardedSocket(ASGIWebSocketAdapter):
    """Strawberry's Starlette adapter, refusing messages over max_ws_message_bytes (uvicorn's ws_max_size refuses
    them first on a real server; this holds for any ASGI server), and quiet once closed: a socket closed by a
    revocation or a limit may still be asked to send or close by an operation that raced it."""

    def __init__(self, adapter: ASGIWebSocketAdapter, *, max_bytes: int):
        super().__init__(adapter.view, adapter.ws, adapter.ws)
        self.max_bytes = max_bytes

    def _too_big(self, text: str) -> bool:
        return len(text) > self.max_bytes or (
            len(text) * 4 > self.max_bytes and len(text.encode("utf-8", "surrogatepass")) > self.max_bytes
        )

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if self._too_big(text):
                    await self.close(CLOSE_MESSAGE_TOO_BIG, f"Message too big: max_ws_message_bytes={self.max_bytes}")
                    return
                try:
                    message = self.view.decode_json(text)
                except JSONDecodeError as e:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from e
                    continue
                yield message
        except KeyError as e:
            raise NonTextMessageReceived from e
        except WebSocketDisconnect:
            pass

    @property
    def closed(self) -> bool:
        return self.ws.application_state == WebSocketState.DISCONNECTED

    async def send_json(self, message: Mapping[str, object]) -> None:
        if not self.closed:
            await super().send_json(message)

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await super().close(code, reason)


class _SocketRules:
    """What both protocols share: the settings' limits, the per-process cap, the session that a revocation ends,
    and coded errors."""

    websocket: _GuardedSocket
    context: Context
    max_subscriptions_per_connection: int | None

    def __init__(self, *, websocket: ASGIWebSocketAdapter, context: Context, **kwargs: Any):
        self.settings: Settings = context.services.settings
        guarded = _GuardedSocket(websocket, max_bytes=self.settings.max_ws_message_bytes)
        super().__init__(websocket=guarded, context=context, **kwargs)  # type: ignore[call-arg]
        self.max_subscriptions_per_connection = self.settings.ws_max_subscriptions
        self._revocation: asyncio.Task | None = None

    async def handle(self) -> None:
        sessions = self.context.services.authenticator.sessions
        cap = self.settings.ws_max_sockets
        if sessions.count() >= cap:
            await self.refuse(_too_many("on this server", "ws_max_sockets", cap))
            return
        sessions.open(_session(self.context), end=self._revoked)
        try:
            await super().handle()  # type: ignore[misc]
        finally:
            sessions.close(_session(self.context))

    async def handle_connection_init(self, message: Any) -> None:
        try:
            await super().handle_connection_init(message)  # type: ignore[misc]
        except SocketRefused as refusal:
            await self.refuse(refusal)
        except Exception as exc:  # the database may be down: the client may try again
            log.warning("ws_connection_init_failed", error=type(exc).__name__)
            await self.websocket.close(CLOSE_INTERNAL_ERROR, "Internal error")

    async def refuse(self, refusal: SocketRefused) -> None:
        self.context.services.authenticator.sessions.refused[refusal.counted_as] += 1
        await self.websocket.close(refusal.close_code, refusal.reason)

    def _revoked(self) -> None:
        """The key this socket was admitted with is revoked: nothing more runs as its workspace, and the socket closes."""
        self.context.workspace = None
        self.context.auth_error = "The API key was revoked."
        self._revocation = asyncio.create_task(self.websocket.close(CLOSE_FORBIDDEN, "Forbidden: API key revoked"))

    async def send_message(self, message: Any) -> None:
        await super().send_message(self._with_codes(message))  # type: ignore[misc]

    def _shared_event_sink(self, head: bytes, is_open: Callable[[], bool]) -> Callable[[bytes], Awaitable[None]]:
        """Sends an encoded payload as `head` + payload + "}" (the message the handler would build for it, in the
        same bytes), while the operation is open, its socket too and its key not revoked."""
        websocket, context = self.websocket, self.context

        async def send(payload: bytes) -> None:
            if is_open() and context.workspace is not None and not websocket.closed:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await websocket.ws.send_text((head + payload + b"}").decode())

        return send

    def _coded(self, error: Any) -> Any:
        """A formatted error with a contract code: the protocol handlers' own errors (an operation limit, a malformed
        message) come without one."""
        if not isinstance(error, dict):
            return error
        extensions = error.get("extensions") or {}
        if "code" in extensions:
            return error
        if error.get("message") == "Subscription limit reached":
            extensions = {
                **extensions, "code": "LIMIT_EXCEEDED", "limit": "ws_max_subscriptions",
                "value": self.max_subscriptions_per_connection,
            }
        else:
            extensions = {**extensions, "code": "BAD_USER_INPUT"}
        return {**error, "extensions": extensions}

    def _with_codes(self, message: Any) -> Any:
        if not isinstance(message, dict):
            return message
        payload = message.get("payload")
        if message.get("type") == "error":
            coded = [self._coded(e) for e in payload] if isinstance(payload, list) else self._coded(payload)
            return {**message, "payload": coded}
        if isinstance(payload, dict) and isinstance(payload.get("errors"), list):
            return {**message, "payload": {**payload, "errors": [self._coded(e) for e in payload["errors"]]}}
        return message


class TransportWSHandler(_SocketRules, BaseGraphQLTransportWSHandler):
    """graphql-transport-ws: Strawberry closes 4408 on the init timeout and 4429 on a second connection_init."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.connection_init_wait_timeout = timedelta(seconds=self.settings.ws_init_timeout_s)

    async def run_operation(self, operation: Operation) -> None:
        # The operation's own task: the subscription's events may go out through this sink.
        head = b'{"id":' + orjson.dumps(operation.id) + b',"type":"next","payload":'
        shared_event_sink.set(self._shared_event_sink(head, lambda: not operation.completed))
        await super().run_operation(operation)


class LegacyWSHandler(_SocketRules, BaseGraphQLWSHandler):
    """graphql-ws (subscriptions-transport-ws): a refusal is a coded connection_error, then the same close codes;
    the init timeout and the single connection_init that Strawberry leaves to the server are kept here."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._init_received = False

    async def handle_async_results(self, operation_id: str, query: str, operation_name: str | None,
                                   variables: dict[str, object] | None) -> None:
        # The operation's own task: the subscription's events may go out through this sink.
        head = b'{"type":"data","id":' + orjson.dumps(operation_id) + b',"payload":'
        shared_event_sink.set(self._shared_event_sink(head, lambda: operation_id in self.subscriptions))
        await super().handle_async_results(operation_id, query, operation_name, variables)

    async def handle(self) -> None:
        timeout = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            timeout.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timeout

    async def _close_unless_initialised(self) -> None:
        await asyncio.sleep(self.settings.ws_init_timeout_s)
        if not self._init_received:
            await self.websocket.close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    async def handle_connection_init(self, message: Any) -> None:
        if self._init_received:
            await self.websocket.close(CLOSE_TOO_MANY, "Too many initialisation requests")
            return
        self._init_received = True
        await super().handle_connection_init(message)

    async def refuse(self, refusal: SocketRefused) -> None:
        await self.send_message({"type": "connection_error", "payload": refusal.payload})
        await super().refuse(refusal)
