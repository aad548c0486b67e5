"""Custom scalars."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import strawberry

from graphql_api.errors import BadUserInput


def _parse_decimal(value: object) -> Decimal:
    try:
        parsed = Decimal(str(value))
    except InvalidOperation as exc:
        raise BadUserInput(f"{value!r} is not a decimal number.") from exc
    if not parsed.is_finite():
        raise BadUserInput(f"{value!r} is not a finite decimal number.")
    return parsed


DecimalScalar = strawberry.scalar(
    Decimal,
    name="Decimal",
    description="An exact decimal number, as a string in plain notation (e.g. \"0.00123400\").",
    serialize=lambda value: format(value, "f"),
    parse_value=_parse_decimal,
)
