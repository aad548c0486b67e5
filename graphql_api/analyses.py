"""Analysis runs in the database: the result, its charge line and the current-result switch commit
together (in the SQL function record_analysis_result, which rerun workers use too); failed runs keep
their charge line; a preview runs the draft on one conversation."""

from __future__ import annotations

from typing import Any, Literal

from graphql_api.analysis.base import AnalysisError, AnalysisOutcome, Analyzer, Usage
from graphql_api.analysis.config import effective_config
from graphql_api.analysis.pricing import cost_usd, is_waived
from graphql_api.conversations import ANALYZABLE_STATUSES, conversation_for_analysis
from graphql_api.db import Database
from graphql_api.errors import ApiError, BadUserInput, not_found

Trigger = Literal["INITIAL", "RERUN", "PREVIEW"]


class AnalysisFailed(ApiError):
    """The model could not analyze the conversation (after retries): an upstream failure, said plainly."""

    code = "INTERNAL"
_REASON = {"INITIAL": "initial", "RERUN": "rerun", "PREVIEW": "preview"}


def outcome_columns(outcome: AnalysisOutcome | None) -> dict[str, Any]:
    """The stored columns of an analysis outcome (all None for a failed run), with its exact cost."""
    if outcome is None:
        return dict.fromkeys(_OUTCOME_COLUMNS)
    return {
        "model": outcome.model,
        "summary": outcome.summary,
        "successful": outcome.successful,
        "user_sentiment": outcome.user_sentiment,
        "in_voicemail": outcome.in_voicemail,
        "custom_data": outcome.custom_data,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "cost_usd": cost_usd(outcome.model, outcome.input_tokens, outcome.output_tokens),
    }


def failure_columns(usage: Usage | None) -> dict[str, Any]:
    """The stored columns of a failed run: only the model and the tokens it spent, when it answered."""
    columns = dict.fromkeys(_OUTCOME_COLUMNS)
    if usage is not None:
        columns.update(
            model=usage.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost_usd(usage.model, usage.input_tokens, usage.output_tokens),
        )
    return columns


async def record_failed_run(
    *, db: Database, workspace_id: int, conversation_id: str, trigger: Trigger, error: AnalysisError
) -> None:
    """A run that failed after the model answered still writes its charge line (nothing else: no result)."""
    if error.usage is None:
        return  # the model was never reached: nothing was spent
    reason = _REASON[trigger]
    columns = failure_columns(error.usage)
    await db.execute(
        "charge_failed_run",
        workspace_id=workspace_id,
        conversation_id=conversation_id,
        model=columns["model"],
        input_tokens=columns["input_tokens"],
        output_tokens=columns["output_tokens"],
        cost_usd=columns["cost_usd"],
        reason=reason,
        waived=is_waived(error.usage.model, reason),
        error=str(error),
    )


_OUTCOME_COLUMNS = (
    "model", "summary", "successful", "user_sentiment", "in_voicemail", "custom_data",
    "input_tokens", "output_tokens", "cost_usd",
)


async def record_result(
    *,
    db: Database,
    workspace_id: int,
    conversation_id: str,
    trigger: Trigger,
    agent_id: str,
    agent_version: int,
    outcome: AnalysisOutcome,
    waive: bool = False,
) -> Any:
    """Store one run and its charge in one statement; a preview never becomes current.

    `waive` marks a run already paid elsewhere (an analysis that came with an import).
    """
    reason = _REASON[trigger]
    return await db.fetch_one(
        "analysis_record",
        workspace_id=workspace_id,
        conversation_id=conversation_id,
        trigger=trigger,
        agent_id=agent_id,
        agent_version=agent_version,
        waived=waive or is_waived(outcome.model, reason),
        reason=reason,
        rerun_job_id=None,
        **outcome_columns(outcome),
    )


async def run_preview(*, db: Database, workspace_id: int, conversation_id: str, analyzer: Analyzer) -> Any:
    """Analyze one conversation with its agent's latest draft config, now, without changing its current result."""
    rows = await db.fetch_all("conversations_by_ids", workspace_id=workspace_id, conversation_ids=[conversation_id])
    if not rows:
        raise not_found("call or chat", conversation_id)
    conversation = rows[0]
    if conversation["status"] not in ANALYZABLE_STATUSES:
        raise BadUserInput(
            f"{conversation_id} is {conversation['status']}; only finished conversations can be analyzed.",
            argument="conversationId",
        )
    drafts = await db.fetch_all("drafts_of_agents", workspace_id=workspace_id, agent_ids=[conversation["agent_id"]])
    draft = drafts[0]
    try:
        outcome = await analyzer.analyze(conversation_for_analysis(conversation), effective_config(draft))
    except AnalysisError as exc:
        await record_failed_run(db=db, workspace_id=workspace_id, conversation_id=conversation_id, trigger="PREVIEW", error=exc)
        raise AnalysisFailed(f"The analysis model failed for {conversation_id}: {exc}") from exc
    return await record_result(
        db=db,
        workspace_id=workspace_id,
        conversation_id=conversation_id,
        trigger="PREVIEW",
        agent_id=conversation["agent_id"],
        agent_version=draft["version"],
        outcome=outcome,
    )
