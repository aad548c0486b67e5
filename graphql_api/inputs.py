"""What the API accepts of a client's values, checked before they reach SQL: text PostgreSQL can store,
instants it can represent, and exact decimals in plain notation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import dateutil.parser

from graphql_api.errors import BadUserInput

# A NUL can't be stored in PostgreSQL text; a lone surrogate is not a character at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_PLAIN_DECIMAL = re.compile(r"[0-9]{1,15}(\.[0-9]{1,18})?")


def text_problem(value: str) -> str | None:
    """Why a string can't be stored as text, or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    char = found.group()
    what = "a NUL character (\\u0000)" if char == "\x00" else f"a lone surrogate (\\u{ord(char):04x}), which is not valid Unicode"
    return f"contains {what} at position {found.start()}"


def check_text(value: str, *, argument: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise BadUserInput(f"`{argument}` {problem}.", argument=argument)
    return value


def unstorable_strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, problem) of every string in a JSON-like value that can't be stored as text, keys included."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            yield path, problem
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and text_problem(key) is not None:
                yield f"{path} (a key)", text_problem(key)  # type: ignore[misc]
            yield from unstorable_strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unstorable_strings(item, f"{path}[{index}]")


def checked_instant(value: datetime, *, argument: str) -> datetime:
    """An aware datetime that PostgreSQL and Python can both hold in UTC; a naive one is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise BadUserInput(
            f"`{argument}` is outside the supported range of instants (0001-01-01 to 9999-12-31 in UTC).",
            argument=argument,
        ) from None


def parse_instant(value: object) -> datetime:
    """The DateTime scalar's input: an ISO 8601 string naming an instant in the supported range."""
    if not isinstance(value, str):
        raise BadUserInput(f"A DateTime is an ISO 8601 string, got {type(value).__name__}.")
    try:
        parsed = dateutil.parser.isoparse(value)
    except (ValueError, OverflowError) as exc:
        raise BadUserInput(f"{value[:64]!r} is not an ISO 8601 date and time ({exc}).") from None
    return checked_instant(parsed, argument="DateTime")


def parse_plain_decimal(value: object) -> Decimal:
    """A non-negative decimal in plain notation: a JSON number, or a string of digits with an optional fraction."""
    if isinstance(value, bool):
        raise BadUserInput(f"{value!r} is not a decimal number.")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value) if value == value and value not in (float("inf"), float("-inf")) else "nan"
        if "e" in text or "E" in text:
            text = format(Decimal(text), "f")
    elif isinstance(value, str):
        text = value
    else:
        raise BadUserInput(f"A Decimal is a string or a number, got {type(value).__name__}.")
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise BadUserInput(
            f"{text[:40]!r} is not a plain non-negative decimal: write digits with an optional fraction, "
            "like \"12.50\" (no sign, spaces, underscores or exponent; at most 15 digits before the point and 18 after)."
        )
    return Decimal(text)
