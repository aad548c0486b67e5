"""Canaries for the library internals this code relies on or overrides (graphql-core, strawberry-graphql,
databases): each pins the exact behaviour or signature the code depends on, so that an upgrade fails here, naming
the file to update, instead of quietly in production."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator
from datetime import timedelta
from enum import Enum
from typing import Any

import pytest
import strawberry
from databases.backends.postgres import PostgresConnection
from graphql import GraphQLError, GraphQLString, parse
from graphql.execution import Executor
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.dataloader import DataLoader
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.mask_errors import MaskErrors
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.graphql import OperationType

from graphql_api.db import Database
from graphql_api.schema import schema as api_schema
from graphql_api.schema.enums import ConversationStatus
from graphql_api.schema.execution import SharedEvent, SharedEventExecutor, _plain_leaf
from graphql_api.schema.extensions import INTERNAL_MESSAGE, ErrorCodes
from graphql_api.schema.loaders import SharedLoader
from graphql_api.websocket import _GuardedSocket


def update(path: str, what: str) -> str:
    return f"A library changed what {path} relies on: {what}. Update {path}."


EXECUTION = "graphql_api/schema/execution.py"
EXTENSIONS = "graphql_api/schema/extensions.py (ErrorCodes)"
DOCUMENTS = "graphql_api/schema/documents.py (Documents)"
LOADERS = "graphql_api/schema/loaders.py (SharedLoader)"
DB = "graphql_api/db.py (Database._forget_broken_connection)"
WEBSOCKET = "graphql_api/websocket.py"
HTTP = "graphql_api/http.py (graphql_over_http)"


# ---- a small schema of our own, run by the same machinery ---------------------------------------------------


@strawberry.enum
class Color(Enum):
    RED = "red"


@strawberry.type
class Thing:
    name: str
    color: Color

    @strawberry.field
    def computed(self) -> str:
        return self.name.upper()


@strawberry.type
class Event(SharedEvent):
    n: int

    @strawberry.field
    def doubled(self, info: strawberry.Info) -> int:
        info.context.runs.append(self.n)
        return self.n * 2


@strawberry.type
class Query:
    @strawberry.field
    def thing(self) -> Thing:
        return Thing(name="a", color=Color.RED)

    @strawberry.field
    def ok(self, info: strawberry.Info) -> bool:
        if info.context is not None and hasattr(info.context, "runs"):
            info.context.runs.append("ok")
        return True

    @strawberry.field
    def boom(self) -> str | None:
        raise RuntimeError("a secret detail")


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def events(self, info: strawberry.Info, factor: int = 1) -> AsyncGenerator[Event, None]:
        yield info.context.event

    @strawberry.subscription
    async def booms(self) -> AsyncGenerator[Query, None]:
        yield Query()


class Ctx:
    def __init__(self, event: Any = None):
        self.event = event
        self.runs: list[Any] = []
        self.resets = 0

    def reset_loaders(self) -> None:
        self.resets += 1


async def first_event(schema: strawberry.Schema, query: str, **kwargs: Any) -> Any:
    stream = await schema.subscribe(query, **kwargs)
    async for result in stream:
        await stream.aclose()
        return result
    raise AssertionError("the subscription sent nothing")


# ---- schema/execution.py: SharedEventExecutor ----------------------------------------------------------------


def test_execute_field_has_the_signature_shared_event_executor_overrides() -> None:
    assert issubclass(StrawberryGraphQLCoreExecutionContext, Executor), update(
        EXECUTION, "Strawberry's execution context is no longer a graphql-core Executor")
    expected = ["self", "parent_type", "source", "field_details_list", "path", "position_context"]
    assert list(inspect.signature(Executor.execute_field).parameters) == expected, update(
        EXECUTION, "graphql-core's Executor.execute_field takes other arguments")
    for name in ("build_per_event_executor", "execute_operation", "build_resolve_info", "is_awaitable"):
        assert callable(getattr(Executor, name, None)), update(EXECUTION, f"graphql-core's Executor.{name} is gone")
    assert api_schema.execution_context_class is SharedEventExecutor, update(
        EXECUTION, "strawberry.Schema no longer keeps execution_context_class")


async def test_plain_leaves_are_read_without_a_resolve_info() -> None:
    built: list[str] = []

    class Counting(SharedEventExecutor):
        def build_resolve_info(self, field_def: Any, field_nodes: Any, parent_type: Any, path: Any) -> Any:
            built.append(field_nodes[0].name.value)
            return super().build_resolve_info(field_def, field_nodes, parent_type, path)

    schema = strawberry.Schema(query=Query, execution_context_class=Counting)
    result = await schema.execute("{ thing { name color computed } }")
    assert result.errors is None and result.data == {"thing": {"name": "a", "color": "RED", "computed": "A"}}
    assert built == ["thing", "computed"], update(
        EXECUTION, "graphql-core no longer resolves each field through Executor.execute_field (plain leaves built "
        f"a resolve info: {built}), or a Strawberry field definition no longer looks plain to _plain_leaf")


def test_the_api_schemas_plain_leaves_are_recognised_and_coerced() -> None:
    call = api_schema._schema.type_map["Call"]
    plain = _plain_leaf(call, "callStatus")
    assert plain is not None and plain[:1] == ("call_status",) and plain[2] is False, update(
        EXECUTION, "the 'strawberry-definition' extension of a GraphQL field (base_resolver, default_resolver "
        "getattr, python_name) no longer describes a plain attribute")
    assert plain[1].coerce_output_value(ConversationStatus.ENDED) == "ENDED", update(
        EXECUTION, "graphql-core's GraphQLEnumType.coerce_output_value no longer takes the Python enum member")
    assert GraphQLString.coerce_output_value("x") == "x"
    assert _plain_leaf(call, "transcriptObject") is None  # a resolver: the full path


class CachedDocuments(SchemaExtension):
    """Parsed documents by their text, as Documents keeps them: subscribers of one text share one operation."""

    cache: dict[str, Any] = {}

    def on_parse(self) -> Any:
        context = self.execution_context
        context.graphql_document = self.cache.setdefault(context.query, parse(context.query))
        yield


async def test_a_subscription_event_is_executed_once_per_document_and_variables() -> None:
    schema = strawberry.Schema(query=Query, subscription=Subscription, execution_context_class=SharedEventExecutor,
                               extensions=[CachedDocuments])
    event = Event(n=2)
    document = "subscription ($f: Int!) { events(factor: $f) { doubled } }"
    contexts = [Ctx(event) for _ in range(3)]
    results = [await first_event(schema, document, variable_values={"f": f}, context_value=ctx)
               for f, ctx in zip((1, 1, 2), contexts)]
    assert [r.data for r in results] == [{"events": {"doubled": 4}}] * 3
    assert [ctx.runs for ctx in contexts] == [[2], [], [2]], update(
        EXECUTION, "graphql-core no longer builds each event's executor with build_per_event_executor and runs it "
        "with execute_operation (subscribers with the same document and variables no longer share a result)")
    assert [ctx.resets for ctx in contexts] == [1, 0, 1], update(EXECUTION, "per-event executors see another context")


# ---- schema/extensions.py: ErrorCodes ------------------------------------------------------------------------


def test_mask_errors_has_the_private_methods_error_codes_overrides() -> None:
    for name, parameters in (("_process_errors", ["self", "errors"]), ("_process_result", ["self", "result"])):
        method = getattr(MaskErrors, name, None)
        assert method is not None and list(inspect.signature(method).parameters) == parameters, update(
            EXTENSIONS, f"strawberry's MaskErrors.{name} is gone or takes other arguments")


async def test_error_codes_reach_query_results_and_subscription_events() -> None:
    schema = strawberry.Schema(query=Query, subscription=Subscription, extensions=[ErrorCodes])
    result = await schema.execute("{ boom }")
    event = await first_event(schema, "subscription { booms { boom } }")
    for answer, where in ((result, "a query result"), (event, "a subscription event")):
        assert [(e.message, e.extensions) for e in answer.errors] == [(INTERNAL_MESSAGE, {"code": "INTERNAL"})], update(
            EXTENSIONS, f"MaskErrors no longer passes {where} through _process_result")


# ---- schema/documents.py: Documents ---------------------------------------------------------------------------

_DOCUMENTS = {
    "{ not a document": "{ ok }",  # what a cache hands over: the text is never parsed again
    "query Named($unused: String) { ok }": "query Named($unused: String) { ok }",  # invalid (unused variable)
    "#refuse\n{ ok }": "{ ok }",
}


class Probe(SchemaExtension):
    """What Documents does, in the order it relies on."""

    seen: list[Any] = []

    def on_parse(self) -> Any:
        context = self.execution_context
        if context.query == "#refuse at parse":
            raise GraphQLError("refused at parse", extensions={"code": "LIMIT_EXCEEDED"})
        context.graphql_document = parse(_DOCUMENTS[context.query])
        yield

    def on_validate(self) -> Any:
        context = self.execution_context
        Probe.seen.append(context._provided_operation_name)
        context.pre_execution_errors = [GraphQLError("refused")] if context.query.startswith("#refuse") else []
        yield


async def test_documents_sets_the_document_and_the_pre_execution_errors_strawberry_honours() -> None:
    schema = strawberry.Schema(query=Query, extensions=[Probe])
    Probe.seen = []
    ctx = Ctx()
    used = await schema.execute("{ not a document", context_value=ctx)
    assert used.errors is None and used.data == {"ok": True}, update(
        DOCUMENTS, "Strawberry parses the text even when on_parse has set execution_context.graphql_document")
    unvalidated = await schema.execute("query Named($unused: String) { ok }", context_value=ctx, operation_name="Named")
    assert unvalidated.errors is None and unvalidated.data == {"ok": True}, update(
        DOCUMENTS, "Strawberry validates again although on_validate set pre_execution_errors = [] before its yield")
    assert Probe.seen == [None, "Named"], update(DOCUMENTS, "ExecutionContext._provided_operation_name is gone")
    assert ctx.runs == ["ok", "ok"]
    refused = await schema.execute("#refuse\n{ ok }", context_value=ctx)
    assert refused.data is None and [e.message for e in refused.errors] == ["refused"], update(
        DOCUMENTS, "errors set in on_validate before its yield no longer stop the operation")
    at_parse = await schema.execute("#refuse at parse", context_value=ctx)
    assert at_parse.data is None and [(e.message, e.extensions) for e in at_parse.errors] == [
        ("refused at parse", {"code": "LIMIT_EXCEEDED"})], update(
        DOCUMENTS, "a GraphQLError raised in on_parse no longer becomes the answer")
    assert ctx.runs == ["ok", "ok"], update(DOCUMENTS, "a refused operation ran a resolver")


# ---- http.py: what schema.execute raises ------------------------------------------------------------------------


async def test_schema_execute_raises_what_http_answers_as_request_errors() -> None:
    with pytest.raises(InvalidOperationTypeError) as mutation:
        await api_schema.execute('mutation { publishDraft(agentId: "a") { version } }',
                                 allowed_operation_types={OperationType.QUERY})
    assert mutation.value.operation_type == OperationType.MUTATION, update(HTTP, "InvalidOperationTypeError.operation_type")
    with pytest.raises(InvalidOperationTypeError) as subscription:
        await api_schema.execute('subscription { rerunProgress(jobId: "x") { item { status } } }',
                                 allowed_operation_types={OperationType.QUERY, OperationType.MUTATION})
    assert subscription.value.operation_type == OperationType.SUBSCRIPTION
    with pytest.raises(CannotGetOperationTypeError):
        await api_schema.execute("query A { __typename }", operation_name="B")
    with pytest.raises(MissingQueryError):
        await api_schema.execute("")


# ---- schema/loaders.py: SharedLoader -----------------------------------------------------------------------------


async def test_a_loader_hands_every_caller_its_cached_future_and_a_shared_loader_shields_it() -> None:
    release = asyncio.Event()

    async def load(keys: list[int]) -> list[int]:
        await release.wait()
        return [k * 10 for k in keys]

    plain = DataLoader(load_fn=load)
    first, second = plain.load(1), plain.load(1)
    assert first is second and isinstance(first, asyncio.Future), update(
        LOADERS, "DataLoader.load no longer returns the one cached future of a key")
    release.set()
    assert await first == 10

    release.clear()
    shared = SharedLoader(load_fn=load)
    cancelled = asyncio.ensure_future(shared.load(1))
    kept = asyncio.ensure_future(shared.load(1))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    assert await kept == 10, update(LOADERS, "cancelling one waiter of a key cancels the answer of the others")


# ---- db.py: Database._forget_broken_connection --------------------------------------------------------------------


async def test_a_task_talks_to_the_database_again_after_a_failed_release(db_url: str, monkeypatch) -> None:
    db = Database(db_url, min_size=1, max_size=3)
    await db.connect()
    try:
        async with db._database.connection() as connection:
            assert db._database._connection is connection and connection._connection_counter == 1, update(
                DB, "databases no longer keeps the task's connection in Database._connection with a _connection_counter")
        assert db._database._connection is None

        async def release_then_fail(self: PostgresConnection) -> None:
            await self._database._pool.release(self._connection)  # the pool has it back, databases never hears of it
            raise ConnectionResetError("the server went away while the connection was released")

        monkeypatch.setattr(PostgresConnection, "release", release_then_fail)
        with pytest.raises(ConnectionResetError):
            await db.ping()
        monkeypatch.undo()
        assert await db.ping(), update(DB, "a task whose connection failed to release can't run statements any more")
    finally:
        await db.disconnect()


# ---- websocket.py: Strawberry's protocol handlers and its Starlette adapter -----------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed: tuple[int, str] | None = None

    async def send_json(self, message: Any) -> None:
        self.sent.append(message)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Refused(Exception):
    pass


class FakeView:
    def __init__(self, refuse: bool = False):
        self.refuse = refuse

    async def on_ws_connect(self, context: Any) -> Any:
        if self.refuse:
            raise Refused
        return None


class WsContext:
    connection_params: Any = None


def _transport(view: FakeView, socket: FakeSocket, **kwargs: Any) -> BaseGraphQLTransportWSHandler:
    return BaseGraphQLTransportWSHandler(view=view, websocket=socket, context=WsContext(), root_value=None,
                                         schema=api_schema, **kwargs)


def _legacy(view: FakeView, socket: FakeSocket, **kwargs: Any) -> BaseGraphQLWSHandler:
    return BaseGraphQLWSHandler(view=view, websocket=socket, context=WsContext(), root_value=None, schema=api_schema,
                                keep_alive=False, keep_alive_interval=None, **kwargs)


def test_the_adapter_and_handlers_have_what_the_socket_rules_override() -> None:
    adapter = ASGIWebSocketAdapter("view", "request", "response")  # type: ignore[arg-type]
    assert (adapter.view, adapter.ws) == ("view", "response"), update(
        WEBSOCKET, "ASGIWebSocketAdapter(view, request, response) no longer keeps .view and .ws (_GuardedSocket)")
    iter_json = inspect.signature(ASGIWebSocketAdapter.iter_json).parameters
    assert iter_json["ignore_parsing_errors"].kind is inspect.Parameter.KEYWORD_ONLY, update(
        WEBSOCKET, "ASGIWebSocketAdapter.iter_json takes other arguments (_GuardedSocket.iter_json)")
    assert list(inspect.signature(ASGIWebSocketAdapter.close).parameters) == ["self", "code", "reason"]
    assert issubclass(_GuardedSocket, ASGIWebSocketAdapter)
    for handler in (BaseGraphQLTransportWSHandler, BaseGraphQLWSHandler):
        parameters = inspect.signature(handler.__init__).parameters
        assert {"websocket", "context", "max_subscriptions_per_connection"} <= set(parameters), update(
            WEBSOCKET, f"{handler.__name__}.__init__ takes other arguments (_SocketRules.__init__)")
        for method in ("handle", "handle_connection_init", "send_message"):
            assert callable(getattr(handler, method, None)), update(WEBSOCKET, f"{handler.__name__}.{method} is gone")
    assert "connection_init_wait_timeout" in inspect.signature(BaseGraphQLTransportWSHandler.__init__).parameters
    assert "connection_init_wait_timeout" not in inspect.signature(BaseGraphQLWSHandler.__init__).parameters, update(
        WEBSOCKET, "Strawberry now times graphql-ws's connection_init out itself: LegacyWSHandler need not")


@pytest.mark.parametrize("make", [_transport, _legacy], ids=["graphql-transport-ws", "graphql-ws"])
async def test_connection_init_sets_the_params_and_lets_a_refusal_through(make: Any) -> None:
    kwargs = {"connection_init_wait_timeout": timedelta(seconds=5)} if make is _transport else {}
    accepted = make(FakeView(), FakeSocket(), **kwargs)
    await accepted.handle_connection_init({"type": "connection_init", "payload": {"Authorization": "Bearer k"}})
    assert accepted.context.connection_params == {"Authorization": "Bearer k"}, update(
        WEBSOCKET, "connection_init no longer sets context.connection_params before on_ws_connect (admit)")
    assert [message["type"] for message in accepted.websocket.sent] == ["connection_ack"]
    refused = make(FakeView(refuse=True), FakeSocket(), **kwargs)
    with pytest.raises(Refused):
        await refused.handle_connection_init({"type": "connection_init", "payload": {}})
    assert refused.websocket.sent == [], update(
        WEBSOCKET, "an exception of on_ws_connect is no longer raised out of handle_connection_init (SocketRefused)")


async def test_strawberry_answers_the_subscription_cap_and_closes_what_the_docs_say() -> None:
    transport = _transport(FakeView(), FakeSocket(), connection_init_wait_timeout=timedelta(seconds=5))
    transport.max_subscriptions_per_connection = 0  # set after __init__, as _SocketRules does
    transport.connection_acknowledged = True
    await transport.handle_subscribe({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}})
    legacy = _legacy(FakeView(), FakeSocket())
    legacy.max_subscriptions_per_connection = 0
    legacy.connection_acknowledged = True
    await legacy.handle_start({"id": "1", "type": "start", "payload": {"query": "{ __typename }"}})
    messages = [transport.websocket.sent[0]["payload"][0]["message"], legacy.websocket.sent[0]["payload"]["message"]]
    assert messages == ["Subscription limit reached"] * 2, update(
        WEBSOCKET, "the subscription cap answers another message (_SocketRules._coded matches it)")

    again = _transport(FakeView(), FakeSocket(), connection_init_wait_timeout=timedelta(seconds=5))
    await again.handle_connection_init({"type": "connection_init"})
    await again.handle_connection_init({"type": "connection_init"})
    assert again.websocket.closed == (4429, "Too many initialisation requests"), update(
        WEBSOCKET, "graphql-transport-ws no longer closes 4429 on a second connection_init (TransportWSHandler)")
    late = _transport(FakeView(), FakeSocket(), connection_init_wait_timeout=timedelta(seconds=5))
    late.connection_init_wait_timeout = timedelta(seconds=0.01)  # set after __init__, as TransportWSHandler does
    late.on_request_accepted()
    await asyncio.sleep(0.2)
    assert late.websocket.closed == (4408, "Connection initialisation timeout"), update(
        WEBSOCKET, "graphql-transport-ws no longer closes 4408 when connection_init_wait_timeout passes")
