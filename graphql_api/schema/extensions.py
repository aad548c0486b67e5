"""Schema extensions: error codes on every error, and fresh DataLoaders per operation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
from graphql.error import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.mask_errors import MaskErrors
import structlog

from graphql_api.errors import ApiError

log = structlog.stdlib.get_logger("graphql_api.errors")

INTERNAL_MESSAGE = "Internal server error. It has been logged; try again or contact support."


def with_code(error: GraphQLError, settings: Any = None) -> GraphQLError:
    """Give an error its contract code; an unexpected one becomes INTERNAL with no internals."""
    original = error.original_error
    if isinstance(original, ApiError):
        message, extensions = original.message, original.extensions
    elif isinstance(original, asyncpg.QueryCanceledError):
        # PostgreSQL's statement_timeout cut the statement off: the request asked for too much at once.
        log.warning("statement_timeout", path=".".join(str(p) for p in error.path or ()))
        message = "A database statement of this request ran past STATEMENT_TIMEOUT_MS and was stopped; ask for less at once."
        extensions = {"code": "LIMIT_EXCEEDED", "limit": "statement_timeout_ms"}
        if settings is not None:
            extensions["value"] = settings.statement_timeout_ms
    elif original is None or error.path is None:
        # Syntax, validation and variable coercion errors: the request itself is wrong.
        message = error.message
        extensions = {**(error.extensions or {}), "code": (error.extensions or {}).get("code", "BAD_USER_INPUT")}
    else:
        log.error("unexpected_error", path=".".join(str(p) for p in error.path), error=type(original).__name__,
                  exc_info=original)
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
        services = getattr(self.execution_context.context, "services", None)
        return [with_code(error, getattr(services, "settings", None)) for error in errors]

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
