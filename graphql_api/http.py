"""GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/), in one place: what a request
may look like, which media type answers it, and which status code goes with each answer.

Every answer of `/graphql` over HTTP is a GraphQL response whose errors carry an `extensions.code`,
whatever went wrong: a body that is not JSON, a wrong method or media type, an operation that can't be
chosen. Strawberry's view keeps the WebSocket protocols and the GraphiQL page.

Status codes, as the specification says for each response media type:
- `application/json`: 200 for every well-formed request, whatever its GraphQL errors.
- `application/graphql-response+json`: 200 once execution started (`data` is present, even null);
  400 for a request that could not start (no `data`), 403 for an operation not allowed here.
- Either way, before the document is looked at: 401 without a valid API key (the body is not even
  read), 429 over the key's rate, 405 for a method that can't carry a request (and a mutation over
  GET), 406 when the client accepts neither media type, 413 for a body over the size limit, 415 for a
  body that is not JSON, 400 for a body that is not a GraphQL-over-HTTP request; 504 past the
  request deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import TYPE_CHECKING, Any

import orjson
from graphql import ExecutionResult, GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType
import structlog

from graphql_api.errors import ApiError
from graphql_api.graphiql import wants_graphiql
from graphql_api.schema import schema
from graphql_api.schema.context import Context
from graphql_api.schema.extensions import INTERNAL_MESSAGE, with_code
from graphql_api.workspaces import PREFIX_LENGTH, bearer_key

if TYPE_CHECKING:
    from graphql_api.app import GraphQLView
    from graphql_api.services import Services

log = structlog.stdlib.get_logger(__name__)

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
ALLOWED_METHODS = "GET, POST"


class RequestError(Exception):
    """A request that is not a GraphQL-over-HTTP request: answered with `status` and one coded error."""

    def __init__(self, status: int, message: str, *, code: str = "BAD_USER_INPUT", headers: dict[str, str] | None = None, **extensions: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extensions = {"code": code, **extensions}


def response_media_type(accept: str | None) -> str:
    """The media type to answer in, from the Accept header (none: `application/json`, as the spec says)."""
    if not accept or not accept.strip():
        return JSON
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        # A wildcard gets application/json, which every client understands.
        chosen = {GRAPHQL_RESPONSE: GRAPHQL_RESPONSE, JSON: JSON, "application/*": JSON, "*/*": JSON}.get(media)
        if chosen is None:
            continue
        rank = (quality, 1 if media == GRAPHQL_RESPONSE else 0, chosen)
        if best is None or rank[:2] > best[:2]:
            best = rank
    if best is None:
        raise RequestError(
            406,
            f"The Accept header ({accept[:100]}) admits neither {GRAPHQL_RESPONSE} nor {JSON}, the media types of "
            "GraphQL responses.",
        )
    return best[2]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413, f"The request body is larger than {limit} bytes (MAX_BODY_BYTES).", code="LIMIT_EXCEEDED",
        limit="max_body_bytes", value=limit,
    )


def _params_from_body(body: bytes, content_type: str) -> dict[str, Any]:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != JSON:
        raise RequestError(
            415, f"POST /graphql takes a JSON body with `Content-Type: {JSON}`, not {media or 'no content type'}.",
            headers={"Accept-Post": JSON},
        )
    charset = next((p.split("=", 1)[1].strip().strip('"').lower() for p in params.split(";") if p.strip().lower().startswith("charset=")), "utf-8")
    if charset not in ("utf-8", "utf8"):
        raise RequestError(415, f"The body must be UTF-8 JSON, not {charset}.")
    try:
        # orjson refuses invalid UTF-8, lone surrogates and nesting deeper than 1,024 levels.
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"The body is not valid UTF-8 JSON: {exc}.") from None
    if isinstance(parsed, list):
        raise RequestError(400, "Batched requests (a JSON array) are not supported; send one operation per request.")
    if not isinstance(parsed, dict):
        raise RequestError(400, f"The body must be a JSON object with `query`, not a JSON {type(parsed).__name__}.")
    return parsed


def _params_from_query_string(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    for name in ("variables", "extensions"):
        raw = params.get(name)
        if raw is not None and raw != "":
            try:
                params[name] = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise RequestError(400, f"The `{name}` parameter is not valid JSON: {exc}.") from None
        else:
            params.pop(name, None)
    return params


def _checked(params: dict[str, Any], services: Services) -> tuple[str, dict[str, Any] | None, str | None, dict[str, Any] | None]:
    query = params.get("query")
    if query is not None and not isinstance(query, str):
        raise RequestError(400, "The request has no GraphQL document: send it as a non-empty string in `query`.")
    extensions = params.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise RequestError(400, "`extensions` must be a JSON object or null.")
    query = services.persisted.resolve(query, extensions)  # a persisted hash stands for its document
    if not isinstance(query, str) or not query.strip():
        raise RequestError(400, "The request has no GraphQL document: send it as a non-empty string in `query`.")
    variables = params.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise RequestError(400, f"`variables` must be a JSON object or null, not a JSON {type(variables).__name__}.")
    operation_name = params.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError(400, "`operationName` must be a string or null.")
    return query, variables, operation_name or None, extensions


def _answer(payload: dict[str, Any], status: int, media_type: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=media_type, headers=headers)


def _error_payload(message: str, extensions: dict[str, Any]) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": extensions}]}


async def handle(view: GraphQLView, request: Request) -> Response:
    """Answer one HTTP request to /graphql: the transport, the key and the limits are checked before the
    document is even parsed."""
    services: Services = request.app.state.services
    settings = services.settings
    if settings.graphiql and wants_graphiql(request) and "extensions" not in request.query_params:
        return await view.render_graphql_ide(request)
    try:
        media_type = response_media_type(request.headers.get("accept"))
    except RequestError as exc:
        return _answer(_error_payload(exc.message, exc.extensions), exc.status, JSON)
    request.app.state.metrics.graphql_requests.inc()
    try:
        if request.method not in ("GET", "POST"):
            raise RequestError(405, f"/graphql answers GET and POST, not {request.method}.", headers={"Allow": ALLOWED_METHODS})
        context = await _authenticated(services, request)
        wait = services.rate_limiter.admit(context.key_prefix or "")
        if wait:
            raise RequestError(
                429, f"Too many requests for this API key: at most {settings.rate_limit_per_s:g} a second on average "
                f"(RATE_LIMIT_PER_S), bursts of {settings.rate_limit_burst}. Try again in {wait:.1f} s.",
                code="LIMIT_EXCEEDED", headers={"Retry-After": str(max(1, math.ceil(wait)))},
                limit="rate_limit_per_s", value=settings.rate_limit_per_s,
            )
        if request.method == "GET":
            params = _params_from_query_string(request)
        else:
            params = _params_from_body(await _read_body(request, settings.max_body_bytes), request.headers.get("content-type", ""))
        query, variables, operation_name, extensions = _checked(params, services)
    except RequestError as exc:
        return _answer(_error_payload(exc.message, exc.extensions), exc.status, media_type, exc.headers)
    except ApiError as exc:
        return _request_failed(exc.message, media_type, **exc.extensions)
    except ClientDisconnect:
        return Response(status_code=400)

    allowed = {OperationType.QUERY} if request.method == "GET" else {OperationType.QUERY, OperationType.MUTATION}
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            result = await schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=operation_name,
                allowed_operation_types=allowed,
                operation_extensions=extensions,
            )
            if context.compiled_roots and settings.read_engine_verify:
                result = await _verified(context, result, query, variables, operation_name)
    except TimeoutError:
        log.warning("request_deadline_exceeded", seconds=settings.request_timeout_s, key=context.key_prefix)
        return _answer(_error_payload(
            f"The request took longer than {settings.request_timeout_s:g} s (REQUEST_TIMEOUT_S) and was stopped.",
            {"code": "LIMIT_EXCEEDED", "limit": "request_timeout_s", "value": settings.request_timeout_s},
        ), 504, media_type)
    except CannotGetOperationTypeError:
        return _request_failed(
            f"The document has no operation named {operation_name!r}." if operation_name else "The document has no operation to run.",
            media_type, argument="operationName",
        )
    except InvalidOperationTypeError as exc:
        if exc.operation_type == OperationType.SUBSCRIPTION:
            return _request_failed(
                "Subscriptions run over the WebSocket at /graphql (graphql-transport-ws or graphql-ws), not over HTTP.",
                media_type,
            )
        return _answer(
            _error_payload("A mutation can't be sent with GET; POST it.", {"code": "BAD_USER_INPUT"}),
            405, media_type, {"Allow": "POST"},
        )
    except MissingQueryError:
        return _request_failed("The request has no GraphQL document.", media_type)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the request itself is being cancelled (the client left, the server stops)
        # A resolver's cancellation escaped the executor: a bug of ours, answered like any other.
        log.exception("request_failed_unexpectedly", key=context.key_prefix)
        return _answer(_error_payload(INTERNAL_MESSAGE, {"code": "INTERNAL"}), 500, media_type)

    errors = [with_code(error) for error in result.errors or ()]
    payload: dict[str, Any] = {}
    started = not (result.data is None and errors and all(error.path is None for error in errors))
    if errors:
        payload["errors"] = [error.formatted for error in errors]
    if started:
        payload["data"] = result.data
    if result.extensions:
        payload["extensions"] = result.extensions
    return _answer(payload, _status(media_type, started, errors), media_type)


_VERIFY_ATTEMPTS = 5


def comparable_result(result: Any) -> tuple[Any, list[dict[str, Any]]]:
    """A result as READ_ENGINE_VERIFY and tests/test_read_engine.py compare it: plain JSON data, coded errors."""
    # Errors in any order: the resolvers' come in the order their fields finished.
    errors = sorted((with_code(error).formatted for error in result.errors or ()), key=lambda e: orjson.dumps(e))
    return orjson.loads(orjson.dumps(result.data)), errors


async def _verified(context: Context, result: Any, query: str, variables: Any, operation_name: str | None) -> Any:
    """READ_ENGINE_VERIFY (tests): the compiled answer, checked against the resolvers' for the same request.

    The resolvers read in several statements, so data that changes meanwhile (a rerun in progress) makes them
    differ from the compiled statement's one snapshot. A difference counts only when the resolvers' answer
    sits between two equal compiled answers (the data held still); while the data moves, it is checked
    again, and left unchecked after a few tries. A real difference is logged and answered as INTERNAL."""

    async def run(read_engine: Any) -> Any:
        fresh = dataclasses.replace(context, read_engine=read_engine, compiled_roots=0, _loaders=None)
        return comparable_result(await schema.execute(query, variable_values=variables, context_value=fresh,
                                                operation_name=operation_name))

    before = comparable_result(result)
    for attempt in range(_VERIFY_ATTEMPTS):
        expected = await run(None)
        if expected == before:
            return result
        after = await run(context.read_engine)
        if after == before:
            log.error("read_engine_mismatch", query=query[:4000], variables=variables, operation=operation_name,
                      compiled=orjson.dumps(before).decode()[:4000], resolvers=orjson.dumps(expected).decode()[:4000])
            return ExecutionResult(None, [GraphQLError("read engine mismatch", extensions={"code": "INTERNAL"})])
        before = after
        await asyncio.sleep(0.02 * (attempt + 1))
    log.info("read_engine_verify_inconclusive", query=query[:200], reason="the data kept changing")
    return result


async def _authenticated(services: Services, request: Request) -> Context:
    """The request's context with its workspace; no valid key, no further work (the body is not even read)."""
    authorization = request.headers.get("authorization")
    key = bearer_key(authorization)
    if key is None:
        message = (
            "The Authorization header must be `Bearer <API key>`." if authorization
            else "Send your API key as `Authorization: Bearer <key>`."
        )
        raise RequestError(401, message, code="UNAUTHENTICATED", headers={"WWW-Authenticate": "Bearer"})
    workspace = await services.authenticator.workspace_for(key)
    if workspace is None:
        raise RequestError(401, "The API key is not valid (unknown or revoked).", code="UNAUTHENTICATED",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return Context(services=services, request=request, workspace=workspace, key_prefix=key[:PREFIX_LENGTH],
                   read_engine=services.read_engine, json_fragments=True)


def _request_failed(message: str, media_type: str, **extensions: Any) -> Response:
    """A well-formed request whose operation could not start."""
    error = GraphQLError(message, extensions={"code": "BAD_USER_INPUT", **extensions})  # a given code wins
    return _answer({"errors": [error.formatted]}, _status(media_type, False, [error]), media_type)


def _status(media_type: str, started: bool, errors: list[GraphQLError]) -> int:
    if media_type == JSON or started:
        return 200
    codes = {(error.extensions or {}).get("code") for error in errors}
    if "UNAUTHENTICATED" in codes:
        return 401
    if "FORBIDDEN" in codes:
        return 403
    return 400
