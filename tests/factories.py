"""Records in Retell's export shape, for tests that import their own data."""

from __future__ import annotations

from typing import Any

from graphql_api.analysis.offline import OfflineAnalyzer
from graphql_api.importer import Importer

BASE_MS = 1_763_000_000_000  # 2025-11-13


def voice_agent(agent_id: str = "agent_voice1", version: int = 0, *, published: bool = True, **extra: Any) -> dict:
    return {
        "agent_id": agent_id,
        "agent_name": extra.pop("name", "Front Desk"),
        "version": version,
        "is_published": published,
        "post_call_analysis_model": extra.pop("model", "gemini-2.5-flash"),
        "post_call_analysis_data": extra.pop(
            "data",
            [
                {"type": "system-presets", "name": "call_summary", "description": f"Summary prompt v{version}"},
                {"type": "enum", "name": "visit_type", "description": "Visit", "choices": ["cleaning", "checkup"]},
            ],
        ),
        **extra,
    }


def chat_agent(agent_id: str = "agent_chat1", version: int = 0, *, published: bool = True) -> dict:
    return {
        "agent_id": agent_id,
        "agent_name": "Billing Chat",
        "version": version,
        "is_published": published,
        "post_chat_analysis_model": "gemini-2.5-flash-lite",
        "post_chat_analysis_data": [{"type": "boolean", "name": "refund_issued", "description": "Was a refund issued?"}],
    }


def call(call_id: str, *, agent_id: str = "agent_voice1", version: int = 0, minute: int = 0, **extra: Any) -> dict:
    start = BASE_MS + minute * 60_000
    return {
        "call_id": call_id,
        "call_type": "phone_call",
        "agent_id": agent_id,
        "agent_version": version,
        "call_status": extra.pop("status", "ended"),
        "direction": "inbound",
        "from_number": "+14155550100",
        "to_number": "+14155550199",
        "start_timestamp": start,
        "end_timestamp": start + 45_000,
        "transcript_object": extra.pop(
            "utterances",
            [
                {"role": "agent", "content": "Hello, how can I help?"},
                {"role": "user", "content": "I'd like to book a cleaning, thanks so much."},
                {"role": "agent", "content": "You're booked for a cleaning on Tuesday."},
            ],
        ),
        **extra,
    }


def chat(chat_id: str, *, agent_id: str = "agent_chat1", version: int = 0, minute: int = 0, **extra: Any) -> dict:
    start = BASE_MS + minute * 60_000
    return {
        "chat_id": chat_id,
        "chat_type": "api_chat",
        "agent_id": agent_id,
        "version": version,
        "chat_status": extra.pop("status", "ended"),
        "start_timestamp": start,
        "end_timestamp": start + 120_000,
        "messages": [
            {"role": "user", "content": "I was charged twice."},
            {"role": "agent", "content": "I've issued a refund for the duplicate charge."},
        ],
        **extra,
    }


async def load(api: Any, workspace: str, records: list[dict], *, analyzer: Any = None) -> Any:
    """Import records into a workspace (created when missing) and return the import report.

    Initial analyses use the offline analyzer unless another is given.
    """
    workspace_id = await api.workspace_id(workspace)
    report = await Importer(db=api.db, workspace_id=workspace_id, analyzer=analyzer or OfflineAnalyzer()).run(
        list(enumerate(records, start=1))
    )
    assert not report.errors, report.errors
    return report
