"""The Strawberry schema: `graphql_api.schema:schema` is what `make schema` exports."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry
from graphql.error import GraphQLError
from strawberry.types import ExecutionContext
import structlog

from graphql_api.schema.analyses import AnalysisSubscription
from graphql_api.schema.execution import SharedEventExecutor
from graphql_api.schema.documents import Documents
from graphql_api.schema.extensions import ErrorCodes, FreshLoaders
from graphql_api.schema.mutation import Mutation
from graphql_api.schema.query import Query
from graphql_api.schema.reruns import Subscription as RerunSubscription
from graphql_api.schema.scalars import DateTimeScalar, DecimalScalar

log = structlog.stdlib.get_logger("graphql_api.errors")


@strawberry.type
class Subscription(RerunSubscription, AnalysisSubscription):
    """The root subscription type: each area's fields, merged."""


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # Unexpected errors were logged with their traceback when ErrorCodes masked them;
        # the rest are the client's and only worth a debug line.
        for error in errors:
            log.debug("client_error", code=(error.extensions or {}).get("code"), message=error.message)


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
