"""Conversations as the rest of the code sees them: which ones a request selects, which can be
analyzed, and what an analyzer reads of one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graphql_api.analysis.base import Conversation, Utterance

# Conversations still in progress have nothing final to analyze yet.
ANALYZABLE_STATUSES = frozenset({"not_connected", "ended", "error"})


@dataclass(frozen=True)
class Selection:
    """Which conversations: explicit ids, or an agent's (or a workspace's) calls or chats matching a filter.

    The one shape a filter has from the GraphQL input to the SQL parameters of a page and of a rerun.
    None means "no condition".
    """

    kind: str  # CALL or CHAT
    agent_id: str | None = None
    ids: list[str] | None = None
    versions: list[int] | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None
    statuses: list[str] | None = None
    successful: bool | None = None
    sentiments: list[str] | None = None

    def filter_params(self) -> dict[str, Any]:
        """The SQL parameters of the filter, conversations_selected (what a page of calls or chats takes besides
        kind and cursor)."""
        return {
            "agent_id": self.agent_id,
            "versions": self.versions,
            "started_from": self.started_from,
            "started_to": self.started_to,
            "statuses": self.statuses,
            "successful": self.successful,
            "sentiments": self.sentiments,
        }

    def params(self) -> dict[str, Any]:
        """Kind, explicit ids and the filter: what a rerun was asked for."""
        return {"kind": self.kind, "ids": self.ids, **self.filter_params()}

    def target_params(self) -> dict[str, Any]:
        """The SQL parameters of a rerun's targets (rerun_targets): params(), narrowed to the statuses that can be
        analyzed."""
        statuses = ANALYZABLE_STATUSES if self.statuses is None else ANALYZABLE_STATUSES.intersection(self.statuses)
        return {**self.params(), "statuses": sorted(statuses)}

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.params().items() if v is not None}
        for key in ("started_from", "started_to"):
            if key in out:
                out[key] = out[key].isoformat()
        return out


def conversation_for_analysis(row: Any) -> Conversation:
    """What an analyzer reads of a conversations row (or a parsed import record)."""
    return Conversation(
        id=row["conversation_id"],
        kind=row["kind"],
        transcript=row["transcript"],
        utterances=tuple(
            Utterance(role=u["role"], content=u.get("content", ""))
            for u in row["utterances"]
            if u.get("role") in ("agent", "user")
        ),
        status=row["status"],
        disconnection_reason=row["disconnection_reason"],
    )
