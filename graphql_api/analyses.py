"""Analysis runs in the database: the result, its charge line and the current-result switch commit
together (in the SQL function record_analysis_result, which rerun workers use too); failed runs keep
their charge line; a preview runs the draft on one conversation, or on a seeded sample of them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from graphql_api.analysis.base import AnalysisError, AnalysisOutcome, Analyzer, Usage
from graphql_api.analysis.config import effective_config
from graphql_api.analysis.pricing import cost_usd, is_waived
from graphql_api.conversations import ANALYZABLE_STATUSES, Selection, conversation_for_analysis
from graphql_api.db import Database
from graphql_api.errors import ApiError, BadUserInput, not_found

Trigger = Literal["INITIAL", "RERUN", "PREVIEW"]


class AnalysisFailed(ApiError):
    """The model could not analyze the conversation (after retries): an upstream failure, said plainly."""

    code = "INTERNAL"
_REASON = {"INITIAL": "initial", "RERUN": "rerun", "PREVIEW": "preview"}


def outcome_columns(outcome: AnalysisOutcome | None, *, batch: bool = False) -> dict[str, Any]:
    """The stored columns of an analysis outcome (all None for a failed run), with its exact cost (at the Batch
    API's price when it came through a batch)."""
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
        "cost_usd": cost_usd(outcome.model, outcome.input_tokens, outcome.output_tokens, batch=batch),
        "evaluation": outcome.evaluation,
        "rationale": outcome.rationale,
    }


def failure_columns(usage: Usage | None, *, batch: bool = False) -> dict[str, Any]:
    """The stored columns of a failed run: only the model and the tokens it spent, when it answered."""
    columns = dict.fromkeys(_OUTCOME_COLUMNS)
    if usage is not None:
        columns.update(
            model=usage.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost_usd(usage.model, usage.input_tokens, usage.output_tokens, batch=batch),
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
    "input_tokens", "output_tokens", "cost_usd", "evaluation", "rationale",
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
    try:
        return await _preview_one(db=db, workspace_id=workspace_id, conversation=conversation, draft=drafts[0], analyzer=analyzer)
    except AnalysisError as exc:
        raise AnalysisFailed(f"The analysis model failed for {conversation_id}: {exc}") from exc


async def _preview_one(*, db: Database, workspace_id: int, conversation: Any, draft: Any, analyzer: Analyzer) -> Any:
    """One PREVIEW result with the draft's config (charged); a failed run keeps its charge line and raises."""
    conversation_id = conversation["conversation_id"]
    try:
        outcome = await analyzer.analyze(conversation_for_analysis(conversation), effective_config(draft))
    except AnalysisError as exc:
        await record_failed_run(db=db, workspace_id=workspace_id, conversation_id=conversation_id, trigger="PREVIEW", error=exc)
        raise
    return await record_result(
        db=db,
        workspace_id=workspace_id,
        conversation_id=conversation_id,
        trigger="PREVIEW",
        agent_id=conversation["agent_id"],
        agent_version=draft["version"],
        outcome=outcome,
    )


@dataclass(frozen=True)
class SamplePreviewItem:
    conversation_id: str
    current_result_id: int | None
    preview: Any  # the PREVIEW result row; None when the model failed
    error: str | None
    cost_usd: Decimal  # what this run cost, failed or not


@dataclass(frozen=True)
class SamplePreview:
    seed: int
    matched: int
    config_version: int
    items: list[SamplePreviewItem]
    impact: dict[str, Any]  # analysis_impact (migration 011) over the previews against the current results


async def run_sample_preview(
    *,
    db: Database,
    workspace_id: int,
    draft: Any,
    targets: Selection,
    size: int,
    seed: int,
    analyzer: Analyzer,
    concurrency: int,
) -> SamplePreview:
    """Preview the draft on `size` finished conversations of the selection picked by `seed`, `concurrency` at a time,
    each as previewAnalysis does (PREVIEW results, charged); the impact compares them with the current results."""
    rows = await db.fetch_all("preview_sample", workspace_id=workspace_id, seed=seed, size=size, **targets.target_params())
    gate = asyncio.Semaphore(concurrency)

    async def one(row: Any) -> SamplePreviewItem:
        async with gate:
            try:
                result = await _preview_one(db=db, workspace_id=workspace_id, conversation=row, draft=draft, analyzer=analyzer)
            except AnalysisError as exc:
                usage = exc.usage
                spent = cost_usd(usage.model, usage.input_tokens, usage.output_tokens) if usage is not None else Decimal(0)
                return SamplePreviewItem(row["conversation_id"], row["current_result_id"], None, str(exc), spent)
        return SamplePreviewItem(row["conversation_id"], row["current_result_id"], result, None, result["cost_usd"])

    items = list(await asyncio.gather(*(one(row) for row in rows)))
    done = [item for item in items if item.preview is not None]
    impact = await db.fetch_one(
        "analysis_impact_of",
        previous_ids=[item.current_result_id for item in done],
        result_ids=[item.preview["id"] for item in done],
    )
    return SamplePreview(
        seed=seed,
        matched=rows[0]["matched"] if rows else 0,
        config_version=draft["version"],
        items=items,
        impact=impact["impact"],
    )
