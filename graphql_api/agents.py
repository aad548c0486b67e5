"""Editing an agent's analysis config: drafts change, published versions never do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from graphql_api.analysis.config import (
    CONFIG_KEYS,
    validate_data_fields,
    validate_model,
    validate_prompt,
    validate_rationale,
    validate_rubric,
)
from graphql_api.analysis.pricing import DEFAULT_MODEL
from graphql_api.db import Database
from graphql_api.errors import Conflict, not_found

_ARGUMENT = {
    "summary_prompt": "summaryPrompt",
    "successful_prompt": "successfulPrompt",
    "user_sentiment_prompt": "userSentimentPrompt",
    "data_fields": "dataFields",
    "model": "model",
    "success_rubric": "successRubric",
    "rationale": "rationale",
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
        elif key == "success_rubric":
            rubric = validate_rubric(value, argument=argument)
            clean[key] = rubric.to_json() if rubric is not None else None
        elif key == "rationale":
            clean[key] = validate_rationale(value, argument=argument)
        else:
            clean[key] = validate_prompt(value, argument=argument)
    return clean


def config_of(row: Any) -> dict[str, Any]:
    return {key: row[key] for key in CONFIG_KEYS}


async def _lock_draft(db: Database, workspace_id: int, agent_id: str, *, follow_publish: bool = True) -> Any:
    """The agent's draft, locked until the transaction ends (edits and publishes queue behind each other).

    A publish that commits while we wait freezes the draft we waited for and makes a new one: an edit
    follows it to the new draft (`follow_publish`); a publish must not (it would publish twice).
    """
    for _ in range(2 if follow_publish else 1):
        draft = await db.fetch_one("agent_draft_lock", workspace_id=workspace_id, agent_id=agent_id)
        if draft is not None:
            return draft
        if not await db.fetch_all("agents_by_ids", workspace_id=workspace_id, agent_ids=[agent_id]):
            raise not_found("agent", agent_id)
    raise Conflict(
        f"The draft of agent {agent_id!r} was published by another request while this one waited; "
        "reload the agent to see its new draft."
    )


def _same_instant_as_sent(stored: datetime, expected: datetime) -> bool:
    """Whether a timestamp a client sent back names the stored one: exactly, or cut to milliseconds
    (what a JavaScript Date keeps)."""
    if stored == expected:
        return True
    return expected.microsecond % 1000 == 0 and stored.replace(microsecond=stored.microsecond // 1000 * 1000) == expected


def _check_expected(draft: Any, *, expected_revision: int | None, expected_config_updated_at: datetime | None) -> None:
    stale = (expected_revision is not None and draft["revision"] != expected_revision) or (
        expected_config_updated_at is not None
        and not _same_instant_as_sent(draft["config_updated_at"], expected_config_updated_at)
    )
    if stale:
        raise Conflict(
            f"The draft changed since you read it (it is now version {draft['version']}, revision {draft['revision']}, "
            f"configUpdatedAt {draft['config_updated_at'].isoformat()}); reload and apply your edit again.",
            version=draft["version"],
            revision=draft["revision"],
            configUpdatedAt=draft["config_updated_at"].isoformat(),
        )


async def update_draft(
    *,
    db: Database,
    workspace_id: int,
    agent_id: str,
    changes: dict[str, Any],
    expected_revision: int | None = None,
    expected_config_updated_at: datetime | None = None,
) -> Any:
    """Apply validated changes to the latest draft; returns the draft row (unchanged when nothing differs)."""
    clean = validate_changes(changes)
    async with db.transaction():
        draft = await _lock_draft(db, workspace_id, agent_id)
        _check_expected(draft, expected_revision=expected_revision, expected_config_updated_at=expected_config_updated_at)
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
            origin="api",
        )
        return row


async def publish_draft(
    *,
    db: Database,
    workspace_id: int,
    agent_id: str,
    expected_version: int | None = None,
    expected_revision: int | None = None,
) -> tuple[Any, Any]:
    """Freeze the latest draft and start the next one as its copy; returns (published, new draft).

    Publishing twice at once publishes once: the second request finds the draft gone and gets CONFLICT,
    and so does a draft that is an unchanged copy of the version published before it.
    """
    async with db.transaction():
        draft = await _lock_draft(db, workspace_id, agent_id, follow_publish=False)
        if expected_version is not None and draft["version"] != expected_version:
            raise Conflict(
                f"Version {expected_version} of agent {agent_id!r} is not its draft any more; the draft is now "
                f"version {draft['version']}. Reload the agent before publishing.",
                version=draft["version"],
                revision=draft["revision"],
            )
        _check_expected(draft, expected_revision=expected_revision, expected_config_updated_at=None)
        previous = await db.fetch_one("agent_latest_published", workspace_id=workspace_id, agent_id=agent_id)
        if previous is not None and config_of(previous) == config_of(draft):
            raise Conflict(
                f"The draft of agent {agent_id!r} (version {draft['version']}) is the same as published version "
                f"{previous['version']}; there is nothing new to publish.",
                version=draft["version"],
                publishedVersion=previous["version"],
            )
        published = await db.fetch_one("agent_draft_publish", workspace_id=workspace_id, agent_id=agent_id)
        draft = await db.fetch_one("agent_draft_ensure", workspace_id=workspace_id, agent_id=agent_id)
    return published, draft
