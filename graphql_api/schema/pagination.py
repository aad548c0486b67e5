"""Relay-style keyset pagination: opaque cursors, page size limits, generic connection types."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
import strawberry

from graphql_api.errors import BadUserInput
from graphql_api.inputs import checked_instant, text_problem

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Positions are PostgreSQL integers.
MAX_POSITION = 2**31 - 1

T = TypeVar("T")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @strawberry.field(description="The nodes of `edges`, for clients that don't need cursors.")
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if first < 0:
        raise BadUserInput(f"`first` must be zero or more, got {first}.", argument="first")
    if first > MAX_PAGE_SIZE:
        raise BadUserInput(
            f"`first` may be at most {MAX_PAGE_SIZE}, got {first}; page through with `after`.",
            argument="first",
        )
    return first


def encode_cursor(tag: str, at: datetime, ident: str) -> str:
    raw = orjson.dumps([tag, at.isoformat(), ident])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def encode_position(tag: str, position: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([tag, position])).decode().rstrip("=")


def decode_position(cursor: str | None, tag: str) -> int:
    """The integer position of a cursor from a list of kind `tag`; 0 before the first."""
    if cursor is None:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        got_tag, position = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if got_tag != tag or type(position) is not int or not 0 <= position <= MAX_POSITION:
            raise ValueError("cursor of another list")
        return position
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise BadUserInput(
            "`after` is not a cursor of this list; pass the `endCursor` of a previous page.", argument="after"
        ) from exc


def decode_cursor(cursor: str | None, tag: str) -> tuple[datetime | None, str | None]:
    """The (timestamp, id) keyset position of a cursor from a connection of kind `tag`."""
    if cursor is None:
        return None, None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        got_tag, at, ident = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if got_tag != tag or not isinstance(ident, str) or text_problem(ident) is not None:
            raise ValueError("cursor of another connection")
        return checked_instant(datetime.fromisoformat(at), argument="after"), ident
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError, BadUserInput) as exc:
        raise BadUserInput(
            "`after` is not a cursor of this list; pass the `endCursor` of a previous page.", argument="after"
        ) from exc


def page_of(
    rows: Sequence[Any], *, limit: int, after: str | None, node: Callable[[Any], T], cursor: Callable[[Any], str]
) -> Connection[T]:
    """One page from rows fetched with `limit + 1`: the extra row only tells whether a next page exists."""
    edges = [Edge(cursor=cursor(row), node=node(row)) for row in rows[:limit]]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > limit,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )


@dataclass(frozen=True)
class Keyset:
    """A page of a list in (timestamp, id) order, as asked for: its size, and the position of `after`."""

    tag: str
    limit: int
    after: str | None
    after_at: datetime | None
    after_id: str | None

    @classmethod
    def of(cls, tag: str, first: int | None, after: str | None) -> Keyset:
        limit = page_size(first)
        return cls(tag, limit, after, *decode_cursor(after, tag))

    def params(self) -> dict[str, Any]:
        """The page's SQL parameters: the position, and a limit one row over the page."""
        return {"after_at": self.after_at, "after_id": self.after_id, "limit": self.limit + 1}

    def connection(self, rows: Sequence[Any], node: Callable[[Any], T], *, at: str, ident: str) -> Connection[T]:
        """The page of these rows, each row's cursor made of its `at` and `ident` columns."""
        return page_of(
            rows, limit=self.limit, after=self.after, node=node,
            cursor=lambda row: encode_cursor(self.tag, row[at], row[ident]),
        )
