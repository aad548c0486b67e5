"""Analysis results as CSV or JSON lines over HTTP: an agent's current results matching a filter (`/export/results`)
and a rerun job's items (`/export/jobs/{job_id}`), authorized by the API key like /graphql, read in keyset pages and
written to the response as they are read, so that memory stays flat whatever the size. docs/export.md is the contract.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from graphql_api.errors import BadUserInput, not_found
from graphql_api.http import RequestError, _authenticated
from graphql_api.inputs import parse_instant, text_problem
from graphql_api.schema.enums import ConversationStatus, UserSentiment
from graphql_api.schema.extensions import with_code
from graphql_api.schema.filters import ConversationFilter, selection_of

if TYPE_CHECKING:
    from graphql_api.db import Database
    from graphql_api.services import Services

log = structlog.stdlib.get_logger(__name__)

# Rows read per statement: a page is held in memory while it is encoded, never more.
PAGE_ROWS = 1000
_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)  # the first page's cursor: asyncpg sends it as 'infinity'

# ---- the columns: each plain one is a column of the export_* queries (sql/queries/export.sql) of the same name. A new
# column of analysis_results goes in export_result_columns there and in RESULT_COLUMNS here, in the same place.
CONVERSATION_COLUMNS = ("conversation_id", "kind", "agent_id", "agent_version", "status", "started_at", "ended_at",
                        "duration_ms")
RESULT_COLUMNS = ("result_id", "trigger", "model", "result_agent_version", "summary", "successful", "user_sentiment",
                  "in_voicemail", "input_tokens", "output_tokens", "cost_usd", "charged", "result_created_at",
                  "evaluation_score", "evaluation", "rationale")
ITEM_COLUMNS = ("item_status", "error")
PREVIOUS_COLUMNS = ("previous_result_id", "previous_trigger", "previous_agent_version", "previous_summary",
                    "previous_successful", "previous_user_sentiment", "previous_in_voicemail")


@dataclass(frozen=True)
class CustomData:
    """A result's custom data (a JSON object column of the query), one column per field: `<column>.<field>`."""

    column: str
    fields: tuple[str, ...]


Layout = tuple[str | CustomData, ...]


def results_layout(fields: tuple[str, ...]) -> Layout:
    return (*CONVERSATION_COLUMNS, *RESULT_COLUMNS, CustomData("custom_data", fields))


def job_layout(fields: tuple[str, ...]) -> Layout:
    return (*CONVERSATION_COLUMNS, *ITEM_COLUMNS, *RESULT_COLUMNS, CustomData("custom_data", fields),
            *PREVIOUS_COLUMNS, CustomData("previous_custom_data", fields))


def header(layout: Layout) -> list[str]:
    names: list[str] = []
    for part in layout:
        if isinstance(part, CustomData):
            names += [f"{part.column}.{field}" for field in part.fields]
        else:
            names.append(part)
    return names


# ---- the formats --------------------------------------------------------------------------------------------------

# A CSV record whose first field starts with this is no row: conversation ids never hold a `#`.
TRUNCATED = "#truncated"


def _cell(value: Any) -> str:
    """A CSV field: text as it is, booleans true/false, null empty, exact decimals in plain notation, instants as the
    API writes them, anything else (numbers of custom data, objects, lists) as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return orjson.dumps(value).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # exact, as a string: the API's Decimal
    raise TypeError(f"{type(value).__name__} is not JSON")


class CsvFormat:
    media_type = "text/csv; charset=utf-8"
    extension = "csv"

    def __init__(self, layout: Layout):
        self.layout = layout

    @staticmethod
    def _records(records: list[list[str]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(records)  # RFC 4180: quoted where needed, CRLF
        return buffer.getvalue().encode()

    def start(self) -> bytes:
        return self._records([header(self.layout)])

    def rows(self, rows: list[Any]) -> bytes:
        records = []
        for row in rows:
            cells = []
            for part in self.layout:
                if isinstance(part, CustomData):
                    values = row[part.column] or {}
                    cells += [_cell(values.get(field)) for field in part.fields]
                else:
                    cells.append(_cell(row[part]))
            records.append(cells)
        return self._records(records)

    def truncated(self, message: str, extensions: dict[str, Any]) -> bytes:
        return self._records([[TRUNCATED, message]])


class JsonLinesFormat:
    media_type = "application/x-ndjson"
    extension = "jsonl"

    def __init__(self, layout: Layout):
        self.layout = layout

    def start(self) -> bytes:
        return b""

    def rows(self, rows: list[Any]) -> bytes:
        lines = []
        for row in rows:
            line: dict[str, Any] = {}
            for part in self.layout:
                if isinstance(part, CustomData):
                    values = row[part.column]
                    line[part.column] = None if values is None else {field: values.get(field) for field in part.fields}
                else:
                    line[part] = row[part]
            lines.append(orjson.dumps(line, default=_json_default))
        return b"\n".join(lines) + b"\n" if lines else b""

    def truncated(self, message: str, extensions: dict[str, Any]) -> bytes:
        # Shaped like the API's errors; a row never has an `errors` key.
        return orjson.dumps({"errors": [{"message": message, "extensions": extensions}]}) + b"\n"


FORMATS: dict[str, type[CsvFormat] | type[JsonLinesFormat]] = {"csv": CsvFormat, "jsonl": JsonLinesFormat}

# ---- the parameters -----------------------------------------------------------------------------------------------

# Named like ConversationFilter's fields; the list ones may be repeated or hold values separated by commas.
_FILTER_PARAMS = ("versions", "startedAfter", "startedBefore", "status", "successful", "userSentiment")
_LIST_PARAMS = frozenset({"versions", "status", "userSentiment"})
RESULTS_PARAMS = ("format", "agentId", *_FILTER_PARAMS)
JOB_PARAMS = ("format",)
_WHOLE = re.compile(r"-?[0-9]{1,9}")
_E = TypeVar("_E", bound=Enum)


class Params:
    """An export's query parameters, checked: unknown names, repeated single values and unstorable text are refused."""

    def __init__(self, request: Request, allowed: tuple[str, ...]):
        self.values: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            if name not in allowed:
                raise BadUserInput(f"Unknown parameter `{name}`; {request.url.path} takes {', '.join(allowed)}.",
                                   argument=name)
            problem = text_problem(value)
            if problem is not None:
                raise BadUserInput(f"`{name}` {problem}.", argument=name)
            if name in _LIST_PARAMS:
                self.values.setdefault(name, []).extend(v.strip() for v in value.split(",") if v.strip())
            elif name in self.values:
                raise BadUserInput(f"`{name}` is given more than once.", argument=name)
            else:
                self.values[name] = [value]

    def one(self, name: str) -> str | None:
        return self.values.get(name, [None])[0]

    def many(self, name: str) -> list[str]:
        return self.values.get(name, [])

    def format(self) -> str:
        value = self.one("format") or "csv"
        if value not in FORMATS:
            raise BadUserInput(f"`format` is {' or '.join(FORMATS)}, not {value[:40]!r}.", argument="format")
        return value

    def conversation_filter(self) -> ConversationFilter:
        return ConversationFilter(
            versions=[self._whole(v, "versions") for v in self.many("versions")] or None,
            started_after=self._instant("startedAfter"),
            started_before=self._instant("startedBefore"),
            status=[_enum(ConversationStatus, v, "status") for v in self.many("status")] or None,
            successful=self._boolean("successful"),
            user_sentiment=[_enum(UserSentiment, v, "userSentiment") for v in self.many("userSentiment")] or None,
        )

    @staticmethod
    def _whole(value: str, name: str) -> int:
        if not _WHOLE.fullmatch(value):
            raise BadUserInput(f"`{name}` takes whole numbers, not {value[:40]!r}.", argument=name)
        return int(value)

    def _instant(self, name: str) -> datetime | None:
        value = self.one(name)
        if value is None:
            return None
        try:
            return parse_instant(value)
        except BadUserInput as bad:
            raise BadUserInput(f"`{name}`: {bad.message}", argument=name) from None

    def _boolean(self, name: str) -> bool | None:
        value = self.one(name)
        if value is None:
            return None
        if value.lower() not in ("true", "false"):
            raise BadUserInput(f"`{name}` is true or false, not {value[:40]!r}.", argument=name)
        return value.lower() == "true"


def _enum(enum: type[_E], value: str, name: str) -> _E:
    try:
        return enum[value.upper()]
    except KeyError:
        raise BadUserInput(f"`{name}` takes {', '.join(enum.__members__)}, not {value[:40]!r}.", argument=name) from None


# ---- what is exported ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    name: str  # the file name, without its extension
    layout: Layout
    page: Callable[[Any], Awaitable[list[Any]]]  # the page after a row (None: the first)
    about: dict[str, Any]  # for the log


async def results_export(*, db: Database, workspace_id: int, params: Params) -> Export:
    """An agent's calls or chats that the filter selects, newest first, each with its current result."""
    agent_id = params.one("agentId")
    if agent_id is None:
        raise BadUserInput("`agentId` is required: the agent whose calls or chats to export.", argument="agentId")
    agents = await db.fetch_all("agents_by_ids", workspace_id=workspace_id, agent_ids=[agent_id])
    if not agents:
        raise not_found("agent", agent_id)  # unknown and foreign alike
    kind = "CALL" if agents[0]["channel"] == "VOICE" else "CHAT"
    try:
        selection = selection_of(kind, params.conversation_filter(), agent_id)
    except BadUserInput as bad:  # the filter's own checks, which name GraphQL's `filter.` input
        argument = str(bad.extensions.get("argument", "")).removeprefix("filter.")
        raise BadUserInput(bad.message.replace("`filter.", "`"), argument=argument) from None
    fields = tuple(row["name"] for row in await db.fetch_all("export_agent_fields", workspace_id=workspace_id,
                                                              agent_id=agent_id))

    async def page(after: Any) -> list[Any]:
        return await db.fetch_all(
            "export_results_page", workspace_id=workspace_id, kind=kind, **selection.filter_params(),
            after_at=after["sort_at"] if after else _LAST_INSTANT, after_id=after["conversation_id"] if after else "",
            limit=PAGE_ROWS,
        )

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Export(name=f"{agent_id}-results-{stamp}", layout=results_layout(fields), page=page,
                  about={"agent": agent_id, "filter": selection.to_json()})


async def job_export(*, db: Database, workspace_id: int, job_id: str) -> Export:
    """A rerun job's items in job order, each with its new result next to the one it replaced."""
    problem = text_problem(job_id)
    job = await db.fetch_one("rerun_job_get", workspace_id=workspace_id, job_id=job_id) if problem is None else None
    if job is None:
        raise not_found("rerun job", job_id)  # unknown and foreign alike
    fields = tuple(field["name"] for field in (job["config_snapshot"] or {}).get("data_fields") or ())

    async def page(after: Any) -> list[Any]:
        return await db.fetch_all("export_job_items_page", workspace_id=workspace_id, job_id=job_id,
                                  after_seq=after["seq"] if after else 0, limit=PAGE_ROWS)

    return Export(name=job_id, layout=job_layout(fields), page=page, about={"job": job_id})


# ---- HTTP ---------------------------------------------------------------------------------------------------------

# Every method reaches the handlers, so that a wrong one is refused in the API's error shape.
EXPORT_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# LIMIT_EXCEEDED: a statement past STATEMENT_TIMEOUT_MS, like the request deadline of /graphql (the rate limit
# answers 429 itself).
_STATUS = {"BAD_USER_INPUT": 400, "UNAUTHENTICATED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "CONFLICT": 409,
           "LIMIT_EXCEEDED": 504, "INTERNAL": 500}


async def export_results(request: Request) -> Response:
    """GET /export/results?agentId=...&format=csv|jsonl&<filter>."""
    async def plan(services: Services, workspace_id: int) -> tuple[Export, str]:
        params = Params(request, RESULTS_PARAMS)
        fmt = params.format()
        return await results_export(db=services.db, workspace_id=workspace_id, params=params), fmt

    return await _export(request, plan)


async def export_job(request: Request) -> Response:
    """GET /export/jobs/{job_id}?format=csv|jsonl."""
    async def plan(services: Services, workspace_id: int) -> tuple[Export, str]:
        fmt = Params(request, JOB_PARAMS).format()
        return await job_export(db=services.db, workspace_id=workspace_id, job_id=request.path_params["job_id"]), fmt

    return await _export(request, plan)


async def _export(request: Request, plan: Callable[[Services, int], Awaitable[tuple[Export, str]]]) -> Response:
    """Everything that can be refused is checked, and the first page read, before the first byte: until then an
    error is a JSON body with its code and status. After it, a failure ends the stream with a truncation marker."""
    services: Services = request.app.state.services
    key_prefix = None
    try:
        if request.method != "GET":
            raise RequestError(405, f"{request.url.path} answers GET, not {request.method}.", headers={"Allow": "GET"})
        context = await _authenticated(services, request)
        key_prefix = context.key_prefix
        _admit(services, key_prefix or "")
        assert context.workspace is not None
        export, format_name = await plan(services, context.workspace.id)
        first = await export.page(None)
    except RequestError as refused:
        return _error(refused.status, refused.message, refused.extensions, refused.headers)
    except Exception as failed:
        message, extensions = _coded(failed, services)
        return _error(_STATUS.get(extensions["code"], 500), message, extensions)
    encoder = FORMATS[format_name](export.layout)
    return StreamingResponse(
        _stream(export, encoder, first, services=services, key=key_prefix),
        media_type=encoder.media_type,
        headers={"Content-Disposition": f'attachment; filename="{export.name}.{encoder.extension}"',
                 "Cache-Control": "no-store"},
    )


def _admit(services: Services, key_prefix: str) -> None:
    """The key's rate limit, as /graphql applies it: an export is one request."""
    settings = services.settings
    wait = services.rate_limiter.admit(key_prefix)
    if wait:
        raise RequestError(
            429, f"Too many requests for this API key: at most {settings.rate_limit_per_s:g} a second on average "
            f"(RATE_LIMIT_PER_S). Try again in {wait:.1f} s.", code="LIMIT_EXCEEDED",
            headers={"Retry-After": str(max(1, math.ceil(wait)))}, limit="rate_limit_per_s", value=settings.rate_limit_per_s,
        )


def _coded(failed: Exception, services: Services) -> tuple[str, dict[str, Any]]:
    """The message and extensions of an error, as /graphql gives them (an unexpected one is logged, INTERNAL)."""
    coded = with_code(GraphQLError(str(failed), path=["export"], original_error=failed), services.settings)
    return coded.message, dict(coded.extensions or {})


def _error(status: int, message: str, extensions: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"errors": [{"message": message, "extensions": extensions}]})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _stream(export: Export, encoder: CsvFormat | JsonLinesFormat, first: list[Any], *, services: Services,
                  key: str | None) -> AsyncIterator[bytes]:
    """The rows, page by page as they are read. A failure can't change the status any more: the stream ends with a
    truncation marker (a CSV record `#truncated,<message>`, a JSON line `{"errors": [...]}`), then the connection is
    cut without the chunked body's end, so that an HTTP client sees an incomplete response too."""
    about = {**export.about, "key": key, "format": encoder.extension}
    started = time.perf_counter()
    rows = 0
    page = first
    ended = "abandoned"  # until it finishes or fails: the client went away, or the server stops
    try:
        yield encoder.start()
        while page:
            yield encoder.rows(page)
            rows += len(page)
            if len(page) < PAGE_ROWS:
                break
            page = await export.page(page[-1])
        ended = "finished"
    except Exception as failed:
        ended = "truncated"
        message, extensions = _coded(failed, services)
        log.error("export_truncated", **about, rows=rows, code=extensions["code"])
        yield encoder.truncated(message, extensions)
        raise
    finally:
        if ended == "finished":
            log.info("export_finished", **about, rows=rows, ms=round((time.perf_counter() - started) * 1000))
        elif ended == "abandoned":
            log.info("export_abandoned", **about, rows=rows)
