"""Editing an agent's analysis config: drafts change, published versions never do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from graphql_api.analysis.config import validate_data_fields, validate_model, validate_prompt
from graphql_api.analysis.pricing import DEFAULT_MODEL
from graphql_api.db import Database
from graphql_api.errors import Conflict, not_found

CONFIG_KEYS = ("summary_prompt", "successful_prompt", "user_sentiment_prompt", "data_fields", "model")
_ARGUMENT = {
    "summary_prompt": "summaryPrompt",
    "successful_prompt": "successfulPrompt",
    "user_sentiment_prompt": "userSentimentPrompt",
    "data_fields": "dataFields",
    "model": "model",
}


def validate_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Check every given change before anything is written; None means the built-in default."""
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        argument = f"input.{_ARGUMENT[key]}"
        if key == "data_fields":
            clean[key] = [f.to_json() for f in validate_data_fields(value or [], argument=argument)]
        elif key == "model":
            clean[key] = validate_model(value, argument=argument) if value is not None else DEFAULT_MODEL
        else:
            clean[key] = validate_prompt(value, argument=argument)
    return clean


def config_of(row: Any) -> dict[str, Any]:
    return {key: row[key] for key in CONFIG_KEYS}


async def _lock_draft(db: Database, workspace_id: int, agent_id: str) -> Any:
    for _ in range(2):  # a publish that committed meanwhile made a new draft; the second look sees it
        draft = await db.fetch_one("agent_draft_lock", workspace_id=workspace_id, agent_id=agent_id)
        if draft is not None:
            return draft
        if not await db.fetch_all("agents_by_ids", workspace_id=workspace_id, agent_ids=[agent_id]):
            raise not_found("agent", agent_id)
    raise Conflict(f"Agent {agent_id!r} has no draft right now; try again.")


async def update_draft(
    *,
    db: Database,
    workspace_id: int,
    agent_id: str,
    changes: dict[str, Any],
    expected_config_updated_at: datetime | None = None,
) -> Any:
    """Apply validated changes to the latest draft; returns the draft row (unchanged when nothing differs)."""
    clean = validate_changes(changes)
    async with db.transaction():
        draft = await _lock_draft(db, workspace_id, agent_id)
        if expected_config_updated_at is not None and draft["config_updated_at"] != expected_config_updated_at:
            raise Conflict(
                "The draft changed since you read it "
                f"(configUpdatedAt is now {draft['config_updated_at'].isoformat()}); reload and apply your edit again.",
                configUpdatedAt=draft["config_updated_at"].isoformat(),
            )
        before = config_of(draft)
        after = {**before, **clean}
        changed = [key for key in CONFIG_KEYS if after[key] != before[key]]
        if not changed:
            return draft
        row = await db.fetch_one(
            "agent_draft_update",
            workspace_id=workspace_id,
            agent_id=agent_id,
            version=draft["version"],
            title=draft["title"],
            **after,
        )
        await db.execute(
            "agent_version_change_insert",
            workspace_id=workspace_id,
            agent_id=agent_id,
            version=draft["version"],
            changed_fields=changed,
            before_config=before,
            after_config=after,
        )
        return row


async def publish_draft(*, db: Database, workspace_id: int, agent_id: str) -> tuple[Any, Any]:
    """Freeze the latest draft and start the next one as its copy; returns (published, new draft)."""
    async with db.transaction():
        await _lock_draft(db, workspace_id, agent_id)
        published = await db.fetch_one("agent_draft_publish", workspace_id=workspace_id, agent_id=agent_id)
        draft = await db.fetch_one("agent_draft_ensure", workspace_id=workspace_id, agent_id=agent_id)
    return published, draft
