"""Custom scalars: exact decimals in plain notation, and instants in the range PostgreSQL and Python share."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry

from graphql_api.inputs import parse_instant, parse_plain_decimal

DecimalScalar = strawberry.scalar(
    Decimal,
    name="Decimal",
    description="An exact decimal number, as a string in plain notation (e.g. \"0.00123400\"). As input, a non-negative "
    "decimal string or JSON number.",
    serialize=lambda value: format(value, "f"),
    parse_value=parse_plain_decimal,
)

DateTimeScalar = strawberry.scalar(
    datetime,
    name="DateTime",
    description="Date with time (isoformat)",
    serialize=lambda value: value.isoformat(),
    parse_value=parse_instant,
)
