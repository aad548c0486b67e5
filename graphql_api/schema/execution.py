"""The GraphQL executor, with three shortcuts where the per-field machinery costs more than the work.

- Root fields of a query that the read engine compiles (schema/compiler.py) run as one SQL statement in
  which PostgreSQL builds their JSON; the response gets that JSON as it is, with no per-field work here.
  The other root fields, and any the statement can't answer exactly as the resolvers would (an error, a
  missing row), run through the resolvers.
- Plain leaf fields (a scalar or enum attribute, no resolver, no arguments) are read and serialized
  directly, without building a resolve info or calling Strawberry's resolver wrapper; a page of 50
  calls has hundreds of them.
- A rerun's progress event goes to every subscriber of the job. Subscribers that sent the same
  document with the same variables get the same answer, so the first one to execute it stores the
  result on the event and the others reuse it: fan-out costs a send per subscriber, not an execution.
  Over WebSocket an event already executed without errors goes straight to the socket as the bytes
  stored with it (`shared_event_sink`), past graphql-core's and Strawberry's per-event layers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import asyncpg
import orjson
import structlog
from graphql import GraphQLEnumType, GraphQLNonNull, GraphQLObjectType, GraphQLScalarType
from graphql.pyutils import Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

from graphql_api.schema.compiler import MISSING, Prepared

log = structlog.stdlib.get_logger(__name__)
_MISSING_TEXT = MISSING.decode()

# (id of parent type, field name) -> (python attribute, leaf type, nullable), or None when not plain.
_PLAIN_LEAVES: dict[tuple[int, str], tuple[str, Any, bool] | None] = {}


def _plain_leaf(parent_type: GraphQLObjectType, field_name: str) -> tuple[str, Any, bool] | None:
    key = (id(parent_type), field_name)
    if key in _PLAIN_LEAVES:
        return _PLAIN_LEAVES[key]
    plain = None
    field = parent_type.fields.get(field_name)
    definition = field.extensions.get("strawberry-definition") if field is not None else None
    if (
        isinstance(definition, StrawberryField)
        and definition.base_resolver is None
        and not definition.arguments
        and not definition.extensions
        and not definition.permission_classes
        and definition.default_resolver is getattr
        and not field.args
    ):
        leaf, nullable = field.type, True
        if isinstance(leaf, GraphQLNonNull):
            leaf, nullable = leaf.of_type, False
        if isinstance(leaf, (GraphQLScalarType, GraphQLEnumType)):
            plain = (definition.python_name, leaf, nullable)
    _PLAIN_LEAVES[key] = plain  # the schema, and so the type object, lives as long as the process
    return plain


# The WebSocket protocol handler sets this in the task of each operation: it sends a shared event's encoded
# `payload` ({"data": ...}) to the operation's subscriber as a `next` (or `data`) message.
shared_event_sink: ContextVar[Callable[[bytes], Awaitable[None]] | None] = ContextVar("shared_event_sink", default=None)


def shared_key(operation: Any, variable_values: Any) -> tuple[int, bytes]:
    """Which subscribers share a result: the same parsed document (documents are cached) and variables."""
    # The coerced values (a dict): the VariableValues tuple itself would be encoded through its repr.
    variables = getattr(variable_values, "coerced", variable_values)
    return (id(operation), orjson.dumps(variables, option=orjson.OPT_SORT_KEYS, default=str))


class SharedEvent:
    """Mixed into a subscription payload whose result may be shared by subscribers."""

    def shared_results(self) -> dict[Any, Any]:
        cache = self.__dict__.get("_shared_results")
        if cache is None:
            cache = self.__dict__["_shared_results"] = {}
        return cache

    def shared_payload(self, key: tuple[int, bytes]) -> bytes | None:
        """The encoded payload of this event for `key`, once a subscriber has executed it without errors."""
        cache = self.__dict__.get("_shared_results")
        hit = cache.get(key) if cache is not None else None
        return hit[2] if hit is not None else None


class _Cached:
    """Stands in for a per-event executor when the event's result is already known."""

    def __init__(self, result: Any):
        self.result = result

    def execute_operation(self, *_: Any, **__: Any) -> Any:
        if isinstance(self.result, asyncio.Future):  # still being executed for another subscriber
            return asyncio.shield(self.result)
        return self.result


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    _compiled: dict[str, Any] | None = None  # response key of a root field -> its JSON, or the error it raised

    def execute_root_grouped_field_set(
        self, root_type: GraphQLObjectType, root_value: Any, grouped_field_set: Any, serially: bool, position_context: Any
    ) -> Any:
        run = super().execute_root_grouped_field_set
        context = self.context_value
        engine = getattr(context, "read_engine", None)
        workspace = getattr(context, "workspace", None)
        if engine is None or workspace is None or serially or isinstance(root_value, SharedEvent):
            return run(root_type, root_value, grouped_field_set, serially, position_context)
        try:
            prepared = engine.prepare(self, root_type, grouped_field_set, workspace.id)
        except Exception as exc:  # a bug of the compiler must not cost the request: the resolvers answer
            log.error("read_engine_prepare_failed", error=type(exc).__name__, exc_info=exc)
            prepared = None
        if prepared is None:
            engine.resolved += len(grouped_field_set)
            return run(root_type, root_value, grouped_field_set, serially, position_context)

        async def compiled_then_rest() -> Any:
            self._compiled = await self._run_compiled(prepared)
            engine.compiled += len(self._compiled)
            if hasattr(context, "compiled_roots"):
                context.compiled_roots += len(self._compiled)
            engine.resolved += len(grouped_field_set) - len(self._compiled)
            result = run(root_type, root_value, grouped_field_set, serially, position_context)
            return await result if self.is_awaitable(result) else result

        return compiled_then_rest()

    async def _run_compiled(self, prepared: Prepared) -> dict[str, Any]:
        """Each compiled root field's JSON, or the statement's error; the root fields it can't answer exactly
        as the resolvers would are left out, and run through the resolvers."""
        statement = prepared.statement
        try:
            row = await self.context_value.db.fetch_compiled(statement.sql, prepared.args)
        except asyncpg.QueryCanceledError as exc:  # statement_timeout: the error the resolvers' statements give
            return {key: exc for key in statement.roots}
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # A statement the compiler got wrong, or a value PostgreSQL refused: the resolvers answer.
            log.error("read_engine_statement_failed", error=type(exc).__name__, message=str(exc)[:300],
                      roots=list(statement.roots))
            return {}
        count = len(statement.roots)
        if not all(row[count + i] for i in range(statement.guards)):
            return {}  # an agent named by an argument does not exist: NOT_FOUND, by the resolvers
        fragments = getattr(self.context_value, "json_fragments", False)
        answers: dict[str, Any] = {}
        for index, key in enumerate(statement.roots):
            text = row[index]
            if text is None or _MISSING_TEXT in text:
                continue  # not found (the resolvers raise NOT_FOUND), or a relation without its row
            answers[key] = orjson.Fragment(text) if fragments else orjson.loads(text)
        return answers

    def execute_field(self, parent_type: GraphQLObjectType, source: Any, field_details_list: Any, path: Any, position_context: Any) -> Any:
        compiled = self._compiled
        if compiled is not None and path.prev is None and path.key in compiled:
            answer = compiled[path.key]
            if isinstance(answer, Exception):
                field = parent_type.fields[field_details_list[0].node.name.value]
                self.handle_field_error(answer, field.type, field_details_list, path)
                return None
            return answer
        plain = _plain_leaf(parent_type, field_details_list[0].node.name.value)
        if plain is not None:
            python_name, leaf, nullable = plain
            value = getattr(source, python_name, Undefined)
            if value is None and nullable:
                return None
            if value is not None and value is not Undefined:
                try:
                    coerced = leaf.coerce_output_value(value)
                except Exception:
                    coerced = None  # let the full path raise the error with its path and location
                if coerced is not None and coerced is not Undefined:
                    return coerced
        return super().execute_field(parent_type, source, field_details_list, path, position_context)

    def _shared_key(self) -> tuple[int, bytes]:
        key = self.__dict__.get("_shared_key_value")
        if key is None:
            key = self.__dict__["_shared_key_value"] = shared_key(self.operation, self.variable_values)
        return key

    def build_per_event_executor(self, payload: Any) -> Any:
        if isinstance(payload, SharedEvent):
            hit = payload.shared_results().get(self._shared_key())
            if hit is not None:
                return _Cached(hit[1])
        # A subscription is one operation with one context; each event reads fresh rows, not the first event's.
        reset = getattr(self.context_value, "reset_loaders", None)
        if reset is not None:
            reset()
        executor = super().build_per_event_executor(payload)
        executor.__dict__["_shared_key_value"] = self._shared_key()
        return executor

    def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        payload = self.root_value
        if not isinstance(payload, SharedEvent):
            return super().execute_operation(*args, **kwargs)
        cache = payload.shared_results()
        # The operation object is kept in the entry, so its id can't be reused while the entry lives.
        key = self._shared_key()
        encode_once = getattr(self.context_value, "json_fragments", False)
        result = super().execute_operation(*args, **kwargs)

        def shared(done: Any) -> Any:
            encoded = None
            if encode_once and done.data is not None:
                # Encoded once here; each subscriber's message embeds the same bytes.
                done.data = orjson.Fragment(orjson.dumps(done.data))
                if not done.errors and not done.extensions:
                    encoded = orjson.dumps({"data": done.data})
            cache[key] = (self.operation, done, encoded)
            return done

        if self.is_awaitable(result):
            async def store() -> Any:
                return shared(await result)

            # Subscribers arriving while it runs wait for this one execution rather than start their own; it
            # runs as a task of its own, so a subscriber that goes away does not cancel it for the others.
            running = asyncio.ensure_future(store())
            cache[key] = (self.operation, running, None)
            return asyncio.shield(running)
        return shared(result)
