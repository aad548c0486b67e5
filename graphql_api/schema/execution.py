"""The GraphQL executor, with two shortcuts where the per-field machinery costs more than the work.

- Plain leaf fields (a scalar or enum attribute, no resolver, no arguments) are read and serialized
  directly, without building a resolve info or calling Strawberry's resolver wrapper; a page of 50
  calls has hundreds of them.
- A rerun's progress event goes to every subscriber of the job. Subscribers that sent the same
  document with the same variables get the same answer, so the first one to execute it stores the
  result on the event and the others reuse it: fan-out costs a send per subscriber, not an execution.
"""

from __future__ import annotations

from typing import Any

import orjson
from graphql import GraphQLEnumType, GraphQLNonNull, GraphQLObjectType, GraphQLScalarType
from graphql.pyutils import Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.field import StrawberryField

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


class SharedEvent:
    """Mixed into a subscription payload whose result may be shared by subscribers."""

    def shared_results(self) -> dict[Any, Any]:
        cache = self.__dict__.get("_shared_results")
        if cache is None:
            cache = self.__dict__["_shared_results"] = {}
        return cache


class _Cached:
    """Stands in for a per-event executor when the event's result is already known."""

    def __init__(self, result: Any):
        self.result = result

    def execute_operation(self, *_: Any, **__: Any) -> Any:
        return self.result


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    def execute_field(self, parent_type: GraphQLObjectType, source: Any, field_details_list: Any, path: Any, position_context: Any) -> Any:
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
        return (id(self.operation), orjson.dumps(self.variable_values, option=orjson.OPT_SORT_KEYS, default=str))

    def build_per_event_executor(self, payload: Any) -> Any:
        if isinstance(payload, SharedEvent):
            hit = payload.shared_results().get(self._shared_key())
            if hit is not None:
                return _Cached(hit[1])
        # A subscription is one operation with one context; each event reads fresh rows, not the first event's.
        reset = getattr(self.context_value, "reset_loaders", None)
        if reset is not None:
            reset()
        return super().build_per_event_executor(payload)

    def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        payload = self.root_value
        if not isinstance(payload, SharedEvent):
            return super().execute_operation(*args, **kwargs)
        cache = payload.shared_results()
        # The operation object is kept in the entry, so its id can't be reused while the entry lives.
        key = self._shared_key()
        result = super().execute_operation(*args, **kwargs)
        if self.is_awaitable(result):
            async def store() -> Any:
                done = await result
                cache[key] = (self.operation, done)
                return done

            return store()
        cache[key] = (self.operation, result)
        return result
