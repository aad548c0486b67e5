"""Impact of new results over the ones they replace: RerunImpact (a job's, a sample preview's) and the
previewImpact mutation, which previews the draft on a seeded random sample of an agent's conversations."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import strawberry

from graphql_api.analyses import SamplePreview, SamplePreviewItem, run_sample_preview
from graphql_api.errors import BadUserInput, not_found
from graphql_api.schema.context import Info
from graphql_api.schema.filters import ConversationFilter, selection_of
from graphql_api.schema.types import AnalysisResult

DEFAULT_SAMPLE_SIZE = 20
MAX_SAMPLE_SIZE = 50
MAX_SEED = 2**31 - 1


@strawberry.type(description="How many results of a custom data field differ from the ones they replace.")
class CustomFieldImpact:
    name: str
    changed: int


@strawberry.type(
    description="New results against the ones they replace (a conversation's current result when the rerun was "
    "requested, or when the preview ran). Outcomes and sentiment are compared only where there was a previous result."
)
class RerunImpact:
    compared: int = strawberry.field(description="New results that have a previous result to compare with.")
    without_previous_result: int = strawberry.field(description="New results of conversations that had no result.")
    flipped_to_successful: int = strawberry.field(description="Successful now, and not before.")
    flipped_to_unsuccessful: int = strawberry.field(description="Successful before, and not now.")
    sentiment_changed: int = strawberry.field(description="A user sentiment other than the previous one.")
    custom_data_changed: list[CustomFieldImpact] = strawberry.field(
        description="Per custom data field either result has, by name: how many values differ (a missing value is null)."
    )

    @classmethod
    def of(cls, impact: dict[str, Any]) -> RerunImpact:
        return cls(
            compared=impact["compared"],
            without_previous_result=impact["without_previous_result"],
            flipped_to_successful=impact["flipped_to_successful"],
            flipped_to_unsuccessful=impact["flipped_to_unsuccessful"],
            sentiment_changed=impact["sentiment_changed"],
            custom_data_changed=[CustomFieldImpact(name=f["name"], changed=f["changed"]) for f in impact["custom_data_changed"]],
        )


@strawberry.type(description="One conversation of a sample preview: its current result next to the preview.")
class ImpactPreviewConversation:
    conversation_id: strawberry.ID
    error: str | None = strawberry.field(description="Why the model failed for this conversation (its charge is kept).")
    cost_usd: Decimal = strawberry.field(description="What this preview cost.")
    preview: AnalysisResult | None = strawberry.field(description="The PREVIEW result; null when the model failed.")
    _current_result_id: strawberry.Private[int | None]

    @strawberry.field(description="The conversation's current result, which the preview did not replace.")
    async def current_result(self, info: Info) -> AnalysisResult | None:
        if self._current_result_id is None:
            return None
        row = await info.context.loaders.result.load(self._current_result_id)
        return AnalysisResult.from_row(row) if row is not None else None

    @classmethod
    def of(cls, item: SamplePreviewItem) -> ImpactPreviewConversation:
        return cls(
            conversation_id=strawberry.ID(item.conversation_id),
            error=item.error,
            cost_usd=item.cost_usd,
            preview=AnalysisResult.from_row(item.preview) if item.preview is not None else None,
            _current_result_id=item.current_result_id,
        )


@strawberry.type(description="The draft's config previewed on a sample of conversations, and its impact.")
class ImpactPreview:
    seed: int = strawberry.field(description="The seed that picked the sample: send it again for the same conversations.")
    matched: int = strawberry.field(description="Finished conversations the filter matched, of which the sample was drawn.")
    config_version: int = strawberry.field(description="The draft version whose config ran.")
    cost_usd: Decimal = strawberry.field(description="What the previews cost, together.")
    conversations: list[ImpactPreviewConversation]
    impact: RerunImpact = strawberry.field(description="The previews against the current results (failed previews left out).")

    @classmethod
    def of(cls, sample: SamplePreview) -> ImpactPreview:
        return cls(
            seed=sample.seed,
            matched=sample.matched,
            config_version=sample.config_version,
            cost_usd=sum((item.cost_usd for item in sample.items), Decimal(0)),
            conversations=[ImpactPreviewConversation.of(item) for item in sample.items],
            impact=RerunImpact.of(sample.impact),
        )


@strawberry.input(description="A sample of an agent's finished calls or chats to preview the draft on.")
class PreviewImpactInput:
    agent_id: strawberry.ID
    filter: ConversationFilter | None = None
    size: int = strawberry.field(default=DEFAULT_SAMPLE_SIZE, description=f"How many conversations, 1 to {MAX_SAMPLE_SIZE}.")
    seed: int | None = strawberry.field(
        default=None, description=f"Picks the sample (0 to {MAX_SEED}); the same seed picks the same conversations. "
        "Drawn at random when omitted, and returned."
    )


@strawberry.type
class ImpactMutations:
    @strawberry.mutation(
        description="Run the agent's latest draft config on a random sample of its finished calls or chats matching "
        "the filter, as previewAnalysis does (PREVIEW results, never current, charged), and compare each preview with "
        "the conversation's current result."
    )
    async def preview_impact(self, info: Info, input: PreviewImpactInput) -> ImpactPreview:
        workspace = info.context.require_workspace()
        if not 1 <= input.size <= MAX_SAMPLE_SIZE:
            raise BadUserInput(f"`size` takes 1 to {MAX_SAMPLE_SIZE} conversations, got {input.size}.", argument="input.size")
        if input.seed is not None and not 0 <= input.seed <= MAX_SEED:
            raise BadUserInput(f"`seed` takes 0 to {MAX_SEED}, got {input.seed}.", argument="input.seed")
        agent = await info.context.loaders.agent.load(input.agent_id)
        if agent is None:
            raise not_found("agent", input.agent_id)
        named = input.filter.agent_id if input.filter else None
        if named is not None and await info.context.loaders.agent.load(named) is None:
            raise not_found("agent", named)  # unknown and foreign alike, before the mismatch is told
        targets = selection_of("CALL" if agent["channel"] == "VOICE" else "CHAT", input.filter, input.agent_id)
        sample = await run_sample_preview(
            db=info.context.db,
            workspace_id=workspace.id,
            draft=await info.context.loaders.draft.load(input.agent_id),
            targets=targets,
            size=input.size,
            seed=random.randint(0, MAX_SEED) if input.seed is None else input.seed,
            analyzer=info.context.services.analyzer,
            concurrency=info.context.services.settings.analysis_concurrency,
        )
        return ImpactPreview.of(sample)
