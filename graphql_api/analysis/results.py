"""Storing analysis runs: the result, its charge line and the current-result switch commit together
(in the SQL function record_analysis_result, which rerun workers use too)."""

from __future__ import annotations

from typing import Any, Literal

from graphql_api.analysis.base import AnalysisOutcome
from graphql_api.analysis.pricing import cost_usd, is_waived
from graphql_api.db import Database

Trigger = Literal["INITIAL", "RERUN", "PREVIEW"]
_REASON = {"INITIAL": "initial", "RERUN": "rerun", "PREVIEW": "preview"}


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
    amount = cost_usd(outcome.model, outcome.input_tokens, outcome.output_tokens)
    waived = waive or is_waived(outcome.model, reason)
    return await db.fetch_one(
        "analysis_record",
        workspace_id=workspace_id,
        conversation_id=conversation_id,
        trigger=trigger,
        agent_id=agent_id,
        agent_version=agent_version,
        model=outcome.model,
        summary=outcome.summary,
        successful=outcome.successful,
        user_sentiment=outcome.user_sentiment,
        in_voicemail=outcome.in_voicemail,
        custom_data=outcome.custom_data,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        cost_usd=amount,
        waived=waived,
        reason=reason,
        rerun_job_id=None,
    )
