"""Schema extensions: error codes on every error, checks of the request before execution, and fresh
DataLoaders per operation."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import OperationDefinitionNode, StringValueNode, Visitor, visit
from graphql.error import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.mask_errors import MaskErrors

from graphql_api.errors import ApiError
from graphql_api.inputs import text_problem, unstorable_strings

log = logging.getLogger("graphql_api.errors")

INTERNAL_MESSAGE = "Internal server error. It has been logged; try again or contact support."


def with_code(error: GraphQLError) -> GraphQLError:
    """Give an error its contract code; an unexpected one becomes INTERNAL with no internals."""
    original = error.original_error
    if isinstance(original, ApiError):
        message, extensions = original.message, original.extensions
    elif original is None or error.path is None:
        # Syntax, validation and variable coercion errors: the request itself is wrong.
        message = error.message
        extensions = {**(error.extensions or {}), "code": (error.extensions or {}).get("code", "BAD_USER_INPUT")}
    else:
        log.error(
            "unexpected_error path=%s error=%s",
            ".".join(str(p) for p in error.path),
            type(original).__name__,
            exc_info=original,
        )
        message, extensions = INTERNAL_MESSAGE, {"code": "INTERNAL"}
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


class ErrorCodes(MaskErrors):
    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [with_code(error) for error in errors]

    def _process_result(self, result: object) -> None:
        # MaskErrors checks a runtime Protocol here, which is slow on every subscription event.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]


class FreshLoaders(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if hasattr(context, "reset_loaders"):
            context.reset_loaders()
        yield


class _StringLiterals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.bad: list[tuple[StringValueNode, str]] = []

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        problem = text_problem(node.value)
        if problem is not None:
            self.bad.append((node, problem))


class RequestChecks(SchemaExtension):
    """With validation, before anything runs: the operation to run is unambiguous, and no string of the
    request (variables or literals) holds what PostgreSQL text can't store, so it fails as the client's
    mistake (BAD_USER_INPUT) instead of deep in SQL."""

    def on_validate(self) -> Iterator[None]:
        # Before the yield: Strawberry decides whether to execute before the validation step is left.
        # Listed after ValidationCache, this runs once the cached validation has set its errors.
        self._check()
        yield

    def _check(self) -> None:
        context = self.execution_context
        if context.pre_execution_errors or context.graphql_document is None:
            return
        errors: list[GraphQLError] = []
        operations = [d for d in context.graphql_document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) > 1 and context._provided_operation_name is None:
            names = ", ".join(o.name.value for o in operations if o.name)
            errors.append(GraphQLError(
                f"The document has {len(operations)} operations ({names}); say which one to run with `operationName`.",
                extensions={"code": "BAD_USER_INPUT"},
            ))
        for path, problem in unstorable_strings(context.variables or {}, "variables"):
            errors.append(GraphQLError(f"`{path}` {problem}.", extensions={"code": "BAD_USER_INPUT", "argument": path}))
        literals = _StringLiterals()
        visit(context.graphql_document, literals)
        for node, problem in literals.bad:
            errors.append(GraphQLError(f"A string in the document {problem}.", nodes=[node], extensions={"code": "BAD_USER_INPUT"}))
        if errors:
            context.pre_execution_errors = errors
