"""Read queries: agents, calls and chats, keyset-paginated and scoped to the caller's workspace."""

from __future__ import annotations

import strawberry

from graphql_api.errors import not_found
from graphql_api.schema.context import Info
from graphql_api.schema.filters import ConversationFilter
from graphql_api.schema.pagination import Connection, Keyset
from graphql_api.schema.reruns import RerunQueries
from graphql_api.schema.webhooks import WebhookQueries
from graphql_api.schema.types import Agent, Call, Chat, get_conversation, list_conversations



@strawberry.type
class Query(RerunQueries, WebhookQueries):
    @strawberry.field(description="Agents of the workspace, oldest first.")
    async def agents(self, info: Info, first: int | None = None, after: str | None = None) -> Connection[Agent]:
        workspace = info.context.require_workspace()
        page = Keyset.of("agent", first, after)
        rows = await info.context.db.fetch_all("agents_page", workspace_id=workspace.id, **page.params())
        for row in rows:
            info.context.loaders.agent.prime(row["agent_id"], row)
        return page.connection(rows, Agent.from_row, at="created_at", ident="agent_id")

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
