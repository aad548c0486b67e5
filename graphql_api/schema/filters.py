"""The conversation filter of the read API and of reruns: its GraphQL input and its one conversion to a
`Selection`, checked before anything runs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import strawberry

from graphql_api.conversations import Selection
from graphql_api.errors import BadUserInput
from graphql_api.schema.enums import ConversationStatus, UserSentiment

Kind = Literal["CALL", "CHAT"]
_CHAT_STATUSES = {ConversationStatus.ONGOING, ConversationStatus.ENDED, ConversationStatus.ERROR}
MAX_FILTER_VERSIONS = 100


@strawberry.input(description="Narrows a list of calls or chats. Every condition given must hold.")
class ConversationFilter:
    agent_id: strawberry.ID | None = None
    versions: list[int] | None = strawberry.field(default=None, description="Agent versions that handled it.")
    started_after: datetime | None = strawberry.field(default=None, description="Started at or after (inclusive).")
    started_before: datetime | None = strawberry.field(default=None, description="Started before (exclusive).")
    successful: bool | None = strawberry.field(default=None, description="By the current analysis.")
    user_sentiment: list[UserSentiment] | None = strawberry.field(default=None, description="By the current analysis.")
    status: list[ConversationStatus] | None = None


def selection_of(kind: Kind, flt: ConversationFilter | None, agent_id: str | None = None) -> Selection:
    """The conversations a filter selects, checked whole: BAD_USER_INPUT names the offending field.

    `agent_id` is the agent being listed (Agent.calls) or rerun; the filter may repeat it, not contradict it.
    """
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
    return Selection(
        kind=kind,
        agent_id=agent_id or flt.agent_id,
        versions=flt.versions,
        started_from=flt.started_after,
        started_to=flt.started_before,
        statuses=[s.value for s in flt.status] if flt.status else None,
        successful=flt.successful,
        sentiments=[s.value for s in flt.user_sentiment] if flt.user_sentiment else None,
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
