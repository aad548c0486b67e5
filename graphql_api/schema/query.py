"""Read queries: agents, calls and chats, keyset-paginated and scoped to the caller's workspace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Literal

import strawberry
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from graphql_api.errors import BadUserInput, not_found
from graphql_api.schema.context import Info
from graphql_api.schema.pagination import Connection, build_connection, decode_cursor, encode_cursor, page_size
from graphql_api.schema.reruns import RerunQueries
from graphql_api.schema.types import (
    Agent,
    AgentVersion,
    AnalysisResult,
    Call,
    Chat,
    ConversationFilter,
    ConversationStatus,
)

Kind = Literal["CALL", "CHAT"]
_CHAT_STATUSES = {ConversationStatus.ONGOING, ConversationStatus.ENDED, ConversationStatus.ERROR}
MAX_FILTER_VERSIONS = 100


def _fields(selections: Iterable[Any]) -> Iterable[SelectedField]:
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        elif isinstance(selection, (FragmentSpread, InlineFragment)):
            yield from _fields(selection.selections)


def selected_node_fields(info: Info) -> set[str]:
    """Names of the fields selected on the nodes of the connection this resolver returns."""
    names: set[str] = set()
    for root in _fields(info.selected_fields):
        for field in _fields(root.selections):
            if field.name == "nodes":
                names.update(f.name for f in _fields(field.selections))
            elif field.name == "edges":
                for node in _fields(field.selections):
                    if node.name == "node":
                        names.update(f.name for f in _fields(node.selections))
    return names


def selected_object_fields(info: Info) -> set[str]:
    """Names of the fields selected on the object this resolver returns."""
    return {f.name for root in _fields(info.selected_fields) for f in _fields(root.selections)}


async def hydrate_conversations(info: Info, items: list[Call] | list[Chat], selected: set[str]) -> None:
    """Fill the relations the selection asks for, one batched query per relation for the whole page."""
    if not items:
        return
    loaders = info.context.loaders
    jobs: list[Any] = []

    if "agent" in selected:
        async def agents() -> None:
            rows = await loaders.agent.load_many([c._row["agent_id"] for c in items])
            cache: dict[str, Agent] = {}
            for item, row in zip(items, rows):
                item.agent = cache.get(row["agent_id"]) or cache.setdefault(row["agent_id"], Agent.from_row(row))

        jobs.append(agents())
    if "agentVersion" in selected:
        async def versions() -> None:
            rows = await loaders.version.load_many([(c._row["agent_id"], c._row["agent_version"]) for c in items])
            cache: dict[tuple[str, int], AgentVersion] = {}
            for item, row in zip(items, rows):
                key = (row["agent_id"], row["version"])
                item.agent_version = cache.get(key) or cache.setdefault(key, AgentVersion.from_row(row))

        jobs.append(versions())
    missing_analysis = [c for c in items if not c._analysis_loaded] if "analysis" in selected else []
    if missing_analysis:
        async def current() -> None:
            rows = await loaders.current_analysis.load_many([c.id for c in missing_analysis])
            for item, row in zip(missing_analysis, rows):
                item.analysis = AnalysisResult.from_row(row) if row is not None else None
                item._analysis_loaded = True

        jobs.append(current())
    if "analysisHistory" in selected:
        async def history() -> None:
            groups = await loaders.analysis_history.load_many([c.id for c in items])
            for item, rows in zip(items, groups):
                item.analysis_history = [AnalysisResult.from_row(r) for r in rows]

        jobs.append(history())
    if jobs:
        await asyncio.gather(*jobs)


def _filter_params(kind: Kind, flt: ConversationFilter | None, agent_id: str | None) -> dict[str, Any]:
    flt = flt or ConversationFilter()
    if agent_id is not None and flt.agent_id is not None and flt.agent_id != agent_id:
        raise BadUserInput("`filter.agentId` names another agent than the one being listed.", argument="filter.agentId")
    if flt.versions is not None:
        if len(flt.versions) > MAX_FILTER_VERSIONS:
            raise BadUserInput(f"`filter.versions` takes at most {MAX_FILTER_VERSIONS} versions.", argument="filter.versions")
        if any(v < 0 for v in flt.versions):
            raise BadUserInput("`filter.versions` are zero or more.", argument="filter.versions")
    for name in ("started_after", "started_before"):
        value = getattr(flt, name)
        if value is not None and value.tzinfo is None:
            raise BadUserInput(f"`filter.{_camel(name)}` needs a time zone, e.g. 2026-11-01T00:00:00Z.", argument=f"filter.{_camel(name)}")
    if flt.started_after and flt.started_before and flt.started_after >= flt.started_before:
        raise BadUserInput("`filter.startedAfter` must be before `filter.startedBefore`.", argument="filter.startedAfter")
    if kind == "CHAT" and flt.status and not set(flt.status) <= _CHAT_STATUSES:
        raise BadUserInput("A chat is ONGOING, ENDED or ERROR; other statuses are for calls.", argument="filter.status")
    return {
        "agent_id": agent_id or flt.agent_id,
        "versions": flt.versions,
        "started_from": flt.started_after,
        "started_to": flt.started_before,
        "statuses": [s.value for s in flt.status] if flt.status else None,
        "successful": flt.successful,
        "sentiments": [s.value for s in flt.user_sentiment] if flt.user_sentiment else None,
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def list_conversations(
    info: Info,
    kind: Kind,
    *,
    first: int | None,
    after: str | None,
    filter: ConversationFilter | None,
    agent_id: str | None = None,
) -> Connection[Any]:
    workspace = info.context.require_workspace()
    limit = page_size(first)
    tag = kind.lower()
    after_at, after_id = decode_cursor(after, tag)
    params = _filter_params(kind, filter, agent_id)
    if params["agent_id"] is not None and agent_id is None:
        if await info.context.loaders.agent.load(params["agent_id"]) is None:
            raise not_found("agent", params["agent_id"])
    rows = await info.context.db.fetch_all(
        "conversations_page",
        workspace_id=workspace.id,
        kind=kind,
        after_at=after_at,
        after_id=after_id,
        limit=limit + 1,
        **params,
    )
    model = Call if kind == "CALL" else Chat
    items = []
    for row in rows[: limit]:
        item = model.from_row(row)
        item.analysis = AnalysisResult.from_row(row, prefix="r_") if row["r_id"] is not None else None
        item._analysis_loaded = True
        items.append(item)
    await hydrate_conversations(info, items, selected_node_fields(info))
    rows_by_id = {row["conversation_id"]: row for row in rows}
    return build_connection(
        items,
        has_next=len(rows) > limit,
        after=after,
        cursor_of=lambda item: encode_cursor(tag, rows_by_id[item.id]["sort_at"], item.id),
    )


async def get_conversation(info: Info, kind: Kind, ident: str) -> Any:
    info.context.require_workspace()
    row = await info.context.loaders.conversation.load(ident)
    if row is None or row["kind"] != kind:
        raise not_found(kind.lower(), ident)
    item = (Call if kind == "CALL" else Chat).from_row(row)
    await hydrate_conversations(info, [item], selected_object_fields(info))
    return item


@strawberry.type
class Query(RerunQueries):
    @strawberry.field(description="Agents of the workspace, oldest first.")
    async def agents(self, info: Info, first: int | None = None, after: str | None = None) -> Connection[Agent]:
        workspace = info.context.require_workspace()
        limit = page_size(first)
        after_at, after_id = decode_cursor(after, "agent")
        rows = await info.context.db.fetch_all(
            "agents_page", workspace_id=workspace.id, after_at=after_at, after_id=after_id, limit=limit + 1
        )
        for row in rows:
            info.context.loaders.agent.prime(row["agent_id"], row)
        created = {row["agent_id"]: row["created_at"] for row in rows}
        return build_connection(
            [Agent.from_row(r) for r in rows[:limit]],
            has_next=len(rows) > limit,
            after=after,
            cursor_of=lambda a: encode_cursor("agent", created[a.id], a.id),
        )

    @strawberry.field(description="One agent by id; NOT_FOUND when it isn't in this workspace.")
    async def agent(self, info: Info, id: strawberry.ID) -> Agent | None:
        info.context.require_workspace()
        row = await info.context.loaders.agent.load(id)
        if row is None:
            raise not_found("agent", id)
        return Agent.from_row(row)

    @strawberry.field(description="One call by id; NOT_FOUND when it isn't in this workspace.")
    async def call(self, info: Info, id: strawberry.ID) -> Call | None:
        return await get_conversation(info, "CALL", id)

    @strawberry.field(description="Calls, newest first.")
    async def calls(
        self, info: Info, first: int | None = None, after: str | None = None, filter: ConversationFilter | None = None
    ) -> Connection[Call]:
        return await list_conversations(info, "CALL", first=first, after=after, filter=filter)

    @strawberry.field(description="One chat by id; NOT_FOUND when it isn't in this workspace.")
    async def chat(self, info: Info, id: strawberry.ID) -> Chat | None:
        return await get_conversation(info, "CHAT", id)

    @strawberry.field(description="Chats, newest first.")
    async def chats(
        self, info: Info, first: int | None = None, after: str | None = None, filter: ConversationFilter | None = None
    ) -> Connection[Chat]:
        return await list_conversations(info, "CHAT", first=first, after=after, filter=filter)
