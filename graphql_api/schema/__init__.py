"""The Strawberry schema: `graphql_api.schema:schema` is what `make schema` exports."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal

import strawberry
from graphql.error import GraphQLError
from strawberry.types import ExecutionContext

from graphql_api.schema.execution import SharedEventExecutor
from graphql_api.schema.documents import Documents
from graphql_api.schema.extensions import ErrorCodes, FreshLoaders
from graphql_api.schema.mutation import Mutation
from graphql_api.schema.query import Query
from graphql_api.schema.reruns import Subscription
from graphql_api.schema.scalars import DateTimeScalar, DecimalScalar


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # Unexpected errors were logged with their traceback when ErrorCodes masked them;
        # the rest are the client's and only worth a debug line.
        for error in errors:
            logging.getLogger("graphql_api.errors").debug(
                "client_error code=%s message=%s", (error.extensions or {}).get("code"), error.message
            )


schema = Schema(
    query=Query,
    execution_context_class=SharedEventExecutor,
    mutation=Mutation,
    subscription=Subscription,
    scalar_overrides={Decimal: DecimalScalar, datetime: DateTimeScalar},
    extensions=[
        ErrorCodes,
        FreshLoaders,
        Documents,
    ],
)
