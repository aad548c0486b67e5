"""GraphQL over WebSocket: the protocol handlers of graphql-transport-ws and graphql-ws, with our rules
on top of Strawberry's (every error coded)."""

from __future__ import annotations

from typing import Any

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

# Operations one WebSocket connection may run at once (the limits issue makes it a setting).
MAX_SUBSCRIPTIONS = 100


def _coded(error: Any) -> Any:
    """A formatted error with a contract code: the protocol handlers' own errors (a subscription limit,
    a malformed message) come without one."""
    if not isinstance(error, dict):
        return error
    extensions = error.get("extensions") or {}
    if "code" in extensions:
        return error
    if error.get("message") == "Subscription limit reached":
        extensions = {**extensions, "code": "LIMIT_EXCEEDED", "limit": "max_subscriptions_per_connection", "value": MAX_SUBSCRIPTIONS}
    else:
        extensions = {**extensions, "code": "BAD_USER_INPUT"}
    return {**error, "extensions": extensions}


def _with_codes(message: Any) -> Any:
    payload = message.get("payload") if isinstance(message, dict) else None
    if message.get("type") == "error" if isinstance(message, dict) else False:
        coded = [_coded(e) for e in payload] if isinstance(payload, list) else _coded(payload)
        return {**message, "payload": coded}
    if isinstance(payload, dict) and isinstance(payload.get("errors"), list):
        return {**message, "payload": {**payload, "errors": [_coded(e) for e in payload["errors"]]}}
    return message


class TransportWSHandler(BaseGraphQLTransportWSHandler):
    async def send_message(self, message: Any) -> None:
        await super().send_message(_with_codes(message))


class LegacyWSHandler(BaseGraphQLWSHandler):
    async def send_message(self, message: Any) -> None:
        await super().send_message(_with_codes(message))
