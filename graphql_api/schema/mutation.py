"""Mutations on agents' analysis configs. Reruns live in graphql_api.schema.reruns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry

from graphql_api import agents
from graphql_api.analysis.config import PROMPT_KEYS
from graphql_api.schema.context import Info
from graphql_api.schema.impact import ImpactMutations
from graphql_api.schema.reruns import RerunMutations
from graphql_api.schema.webhooks import WebhookMutations
from graphql_api.analyses import run_preview
from graphql_api.schema.enums import DataFieldType, RationaleMode, RubricType
from graphql_api.schema.types import AgentVersion, AnalysisResult


@strawberry.input(description="One custom analysis field.")
class DataFieldInput:
    name: str = strawberry.field(description="Letters, digits and _; the key of the value in `customData`.")
    type: DataFieldType
    description: str = ""
    examples: list[str] | None = None
    choices: list[str] | None = strawberry.field(default=None, description="Required, non-empty and unique for ENUM; absent otherwise.")
    required: bool = strawberry.field(default=False, description="Left empty by the analysis, it makes the conversation unsuccessful.")


@strawberry.input(description="One criterion of a CHECKLIST rubric.")
class RubricCriterionInput:
    name: str = strawberry.field(description="Letters, digits and _, unique in the rubric.")
    prompt: str = strawberry.field(description="What this criterion checks.")


@strawberry.input(
    description="How success is judged instead of the yes/no `successfulPrompt` (which still says what is judged): "
    "the model answers on the rubric's scale and `successful` is score >= threshold."
)
class SuccessRubricInput:
    type: RubricType
    threshold: float | None = strawberry.field(
        default=None,
        description="The lowest score that is a success. Required for NUMERIC (within the scale) and PERCENTAGE "
        "(0..100); LIKERT: 1..5, default 4 (agree); CHECKLIST: how many criteria must be met, default all; none for "
        "PASS_FAIL.",
    )
    scale_min: int | None = strawberry.field(default=None, description="NUMERIC only, e.g. 1.")
    scale_max: int | None = strawberry.field(default=None, description="NUMERIC only, e.g. 10.")
    criteria: list[RubricCriterionInput] | None = strawberry.field(default=None, description="CHECKLIST only: 1 to 20.")


@strawberry.input(
    description="Changes to a draft's analysis config. An omitted field stays as it is; an explicit null "
    "resets a prompt to the built-in default (and the model to the default model)."
)
class AnalysisConfigInput:
    summary_prompt: str | None = strawberry.UNSET
    successful_prompt: str | None = strawberry.UNSET
    user_sentiment_prompt: str | None = strawberry.UNSET
    data_fields: list[DataFieldInput] | None = strawberry.field(
        default=strawberry.UNSET, description="The whole list, replacing the current one; null clears it."
    )
    model: str | None = strawberry.UNSET
    success_rubric: SuccessRubricInput | None = strawberry.field(
        default=strawberry.UNSET, description="Judge success on a rubric; null goes back to the yes/no prompt."
    )
    rationale: RationaleMode | None = strawberry.field(
        default=strawberry.UNSET,
        description="Which outputs come back with a rationale grounded in the transcript; null is NONE. More "
        "output tokens: see the estimate.",
    )
    expected_revision: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="When given, the edit is refused with CONFLICT unless the draft is still at this `revision`.",
    )
    expected_config_updated_at: datetime | None = strawberry.field(
        default=strawberry.UNSET,
        description="When given, the edit is refused with CONFLICT if the draft changed since this `configUpdatedAt` "
        "(exact, or cut to milliseconds as a JavaScript Date keeps it). Prefer `expectedRevision`.",
    )


def _given(value: Any) -> Any:
    return None if value is strawberry.UNSET else value


def _changes(input: AnalysisConfigInput) -> dict:
    changes = {}
    for key in (*PROMPT_KEYS, "model"):
        value = getattr(input, key)
        if value is not strawberry.UNSET:
            changes[key] = value
    if input.data_fields is not strawberry.UNSET:
        changes["data_fields"] = [
            {
                "name": f.name,
                "type": f.type.value,
                "description": f.description,
                "examples": f.examples or [],
                "choices": f.choices,
                "required": f.required,
            }
            for f in input.data_fields or []
        ]
    if input.success_rubric is not strawberry.UNSET:
        rubric = input.success_rubric
        changes["success_rubric"] = None if rubric is None else {
            "type": rubric.type.value,
            "threshold": rubric.threshold,
            "scale_min": rubric.scale_min,
            "scale_max": rubric.scale_max,
            "criteria": [{"name": c.name, "prompt": c.prompt} for c in rubric.criteria or []],
        }
    if input.rationale is not strawberry.UNSET:
        changes["rationale"] = input.rationale.value if input.rationale is not None else None
    return changes


@strawberry.type
class Mutation(RerunMutations, WebhookMutations, ImpactMutations):
    @strawberry.mutation(
        description="Edit the analysis config of the agent's latest draft, all or nothing. Published versions can't be edited."
    )
    async def update_draft_prompts(self, info: Info, agent_id: strawberry.ID, input: AnalysisConfigInput) -> AgentVersion:
        workspace = info.context.require_workspace()
        row = await agents.update_draft(
            db=info.context.db,
            workspace_id=workspace.id,
            agent_id=agent_id,
            changes=_changes(input),
            expected_revision=_given(input.expected_revision),
            expected_config_updated_at=_given(input.expected_config_updated_at),
        )
        return AgentVersion.from_row(row)

    @strawberry.mutation(
        description="Run the agent's latest draft config on one call or chat now, to try prompts before a rerun. "
        "The result is kept in `analysisHistory` with trigger PREVIEW and never becomes the current analysis; "
        "it is charged like a rerun."
    )
    async def preview_analysis(self, info: Info, conversation_id: strawberry.ID) -> AnalysisResult:
        workspace = info.context.require_workspace()
        row = await run_preview(
            db=info.context.db,
            workspace_id=workspace.id,
            conversation_id=conversation_id,
            analyzer=info.context.services.analyzer,
        )
        return AnalysisResult.from_row(row)

    @strawberry.mutation(
        description="Freeze the latest draft and start the next draft as a copy of it. Returns the published version. "
        "CONFLICT when another request published the draft meanwhile, when the draft is an unchanged copy of the "
        "last published version, or when `expectedVersion`/`expectedRevision` no longer match the draft."
    )
    async def publish_draft(
        self,
        info: Info,
        agent_id: strawberry.ID,
        expected_version: Annotated[int | None, strawberry.argument(description="The draft's `version` as you read it.")] = None,
        expected_revision: Annotated[int | None, strawberry.argument(description="The draft's `revision` as you read it.")] = None,
    ) -> AgentVersion:
        workspace = info.context.require_workspace()
        published, _ = await agents.publish_draft(
            db=info.context.db,
            workspace_id=workspace.id,
            agent_id=agent_id,
            expected_version=expected_version,
            expected_revision=expected_revision,
        )
        return AgentVersion.from_row(published)
