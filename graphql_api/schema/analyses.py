"""The analysisCompleted subscription: each analysis of an agent's calls or chats as it commits, for a live list."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
import structlog

from graphql_api.errors import ApiError, LimitExceeded, not_found
from graphql_api.reruns.progress import QUEUE_LIMIT, SubscriberLagged
from graphql_api.schema.context import Info
from graphql_api.schema.enums import AnalysisTrigger
from graphql_api.schema.execution import SharedEvent, shared_event_sink, shared_key
from graphql_api.schema.types import AnalysisResult, Call, Chat, hydrate_conversations, selected_object_fields

log = structlog.stdlib.get_logger(__name__)


@strawberry.type(
    description="An analysis that has just committed: the result, what produced it, and its call or chat. A result "
    "that is not a PREVIEW is now the conversation's current analysis (`analysis` of the call or chat)."
)
class CompletedAnalysis:
    result: AnalysisResult
    trigger: AnalysisTrigger
    rerun_job_id: strawberry.ID | None = strawberry.field(description="The rerun job that produced it; null for an "
                                                          "initial analysis or a preview.")
    conversation_id: strawberry.ID
    _row: strawberry.Private[Any]

    @strawberry.field(description="The call, when the agent is a voice agent.")
    async def call(self, info: Info) -> Call | None:
        return await _hydrated(info, self._row["conversation_id"], Call)

    @strawberry.field(description="The chat, when the agent is a chat agent.")
    async def chat(self, info: Info) -> Chat | None:
        return await _hydrated(info, self._row["conversation_id"], Chat)

    @classmethod
    def from_row(cls, row: Any) -> CompletedAnalysis:
        return cls(
            result=AnalysisResult.from_row(row),
            trigger=AnalysisTrigger(row["trigger"]),
            rerun_job_id=strawberry.ID(row["rerun_job_id"]) if row["rerun_job_id"] else None,
            conversation_id=strawberry.ID(row["conversation_id"]),
            _row=row,
        )


async def _hydrated(info: Info, conversation_id: str, type_: type[Call] | type[Chat]) -> Any:
    """The call or chat with what the selection asks of it, or None when the conversation is of the other kind."""
    found = await info.context.loaders.conversation.load(conversation_id)
    if found is None or found["kind"] != ("CALL" if type_ is Call else "CHAT"):
        return None
    conversation = type_.from_row(found)
    await hydrate_conversations(info, [conversation], selected_object_fields(info))
    return conversation


@strawberry.type(
    description="One event of analysisCompleted. The first one has `analysis` null: it says the subscription is live, "
    "so a list loaded from then on misses nothing. Each one after it is an analysis of the agent's conversations."
)
class AnalysisCompletedEvent(SharedEvent):
    analysis: CompletedAnalysis | None


@strawberry.type
class AnalysisSubscription:
    @strawberry.subscription(
        description="Each analysis of this agent's calls or chats as it commits: initial analyses of imported "
        "conversations, reruns, and (with includePreviews) previews. The first event (analysis null) says the "
        "subscription is live: load the list then, and apply each event after it. NOT_FOUND when the agent isn't in "
        "this workspace."
    )
    async def analysis_completed(
        self, info: Info, agent_id: strawberry.ID, include_previews: bool = False
    ) -> AsyncGenerator[AnalysisCompletedEvent, None]:
        workspace = info.context.require_workspace()
        try:
            async for event in _completed(info, workspace.id, agent_id, include_previews):
                yield event
        except ApiError:
            raise
        except SubscriberLagged as exc:
            raise LimitExceeded(f"This subscriber left more than {QUEUE_LIMIT} events unread; subscribe again and "
                                "reload the list.", limit="subscription_queue", value=QUEUE_LIMIT) from exc
        except Exception as exc:
            # Errors raised here reach clients without a path; say nothing of the internals.
            log.error("subscription_failed", agent=agent_id, error=type(exc).__name__, exc_info=exc)
            raise ApiError("Internal server error. It has been logged; subscribe again.") from exc


async def _completed(
    info: Info, workspace_id: int, agent_id: str, include_previews: bool
) -> AsyncGenerator[AnalysisCompletedEvent, None]:
    hub = info.context.services.progress
    # Subscribed before the agent is checked, so nothing committed after the answer is missed.
    async with hub.subscribe_analyses(workspace_id, agent_id) as subscriber:
        if await info.context.loaders.agent.load(agent_id) is None:
            raise not_found("agent", agent_id)
        yield AnalysisCompletedEvent(analysis=None)
        # An event another subscriber of the same document and variables has executed goes to the socket as its
        # stored bytes; the others go through the executor (which stores them for the rest).
        sink = shared_event_sink.get()
        key = shared_key(info._raw_info.operation, info._raw_info.variable_values) if sink is not None else None
        async for event in subscriber.events():
            if event.result["trigger"] == "PREVIEW" and not include_previews:
                continue
            if event.view is None:
                event.view = AnalysisCompletedEvent(analysis=CompletedAnalysis.from_row(event.result))
            payload = event.view.shared_payload(key) if key is not None else None
            if payload is None:
                yield event.view
            else:
                await sink(payload)


__all__ = ["AnalysisCompletedEvent", "AnalysisSubscription", "CompletedAnalysis"]
