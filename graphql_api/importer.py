"""Import of agents, calls and chats in Retell's export shape, idempotent by id.

A bad record is skipped with its line and reason. A record changes a stored row only where it carries a
value that differs, and never takes back a draft edit made here (see `Importer`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import structlog

from graphql_api.agents import config_of
from graphql_api.analysis.base import AnalysisError, AnalysisOutcome, Analyzer
from graphql_api.analysis.config import (
    CONFIG_KEYS,
    PROMPT_KEYS,
    effective_config,
    validate_data_fields,
    validate_model,
    validate_prompt,
)
from graphql_api.analysis.pricing import DEFAULT_MODEL
from graphql_api.analyses import record_failed_run, record_result
from graphql_api.conversations import ANALYZABLE_STATUSES, conversation_for_analysis
from graphql_api.db import Database
from graphql_api.errors import ApiError

log = structlog.stdlib.get_logger(__name__)

# Told how far an import is: (stage, done, total), stage "records" (written or skipped) then "analyses" (initial runs).
Progress = Callable[[str, int, int], None]

CALL_STATUSES = {"registered", "not_connected", "ongoing", "ended", "error"}
CHAT_STATUSES = {"ongoing", "ended", "error"}
_SENTIMENTS = {"positive": "POSITIVE", "negative": "NEGATIVE", "neutral": "NEUTRAL", "unknown": "UNKNOWN"}


class RecordError(Exception):
    """A record that can't be imported, with the reason a person can act on."""


@dataclass
class ImportReport:
    """What an import changed, what it left as it was, and what it skipped (by line)."""

    agents: int = 0  # created or renamed
    versions: int = 0  # agent versions created, changed or published
    calls: int = 0  # created or changed
    chats: int = 0
    analyses_imported: int = 0
    analyses_run: int = 0
    analyses_failed: int = 0
    unchanged: int = 0  # records that matched what is stored, or that met a row kept as it is here
    errors: list[tuple[int, str]] = field(default_factory=list)  # skipped records
    notices: list[tuple[int, str]] = field(default_factory=list)  # what a person should know about

    @property
    def skipped(self) -> int:
        return len({line for line, _ in self.errors})

    def summary(self) -> str:
        return (
            f"agents={self.agents} versions={self.versions} calls={self.calls} chats={self.chats} "
            f"analyses_imported={self.analyses_imported} analyses_run={self.analyses_run} "
            f"analyses_failed={self.analyses_failed} unchanged={self.unchanged} skipped={self.skipped}"
        )


# ---- reading ----------------------------------------------------------------------------------


def read_records(text: str) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    """Split a file into (line, record) pairs; unreadable parts become (line, reason) errors."""
    stripped = text.lstrip()
    if not stripped:
        return [], []
    if stripped[0] == "[":
        return _read_array(text)
    if stripped[0] == "{":
        try:
            whole = orjson.loads(text)
            line = text[: len(text) - len(stripped)].count("\n") + 1
            return [(line, whole)], []
        except orjson.JSONDecodeError:
            pass  # several objects: JSON lines
    records, errors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            errors.append((number, f"not valid JSON: {exc}"))
    return records, errors


def _read_array(text: str) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    import json

    decoder = json.JSONDecoder()
    records: list[tuple[int, Any]] = []
    pos = text.index("[") + 1
    n = len(text)

    def skip(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    while True:
        pos = skip(pos)
        if pos >= n:
            return records, [(text.count("\n", 0, pos) + 1, "the JSON array is not closed")]
        if text[pos] == "]":
            return records, []
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            # Past a broken element the rest of the array can't be trusted.
            return records, [(exc.lineno, f"not valid JSON: {exc.msg}")]
        records.append((line, value))
        pos = skip(pos)
        if pos < n and text[pos] == ",":
            pos += 1


# ---- normalizing ------------------------------------------------------------------------------


def _ms(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise RecordError(f"`{name}` must be epoch milliseconds, got {value!r}")
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _str(record: dict, name: str, *, required: bool = False, max_len: int = 10_000) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise RecordError(f"`{name}` is missing")
        return None
    if not isinstance(value, str):
        raise RecordError(f"`{name}` must be a string")
    if len(value) > max_len:
        raise RecordError(f"`{name}` is longer than {max_len} characters")
    return value


def _id(record: dict, name: str) -> str:
    value = _str(record, name, required=True, max_len=128)
    assert value is not None
    if not value or not all(c.isalnum() or c in "_-" for c in value):
        raise RecordError(f"`{name}` {value!r} must be letters, digits, _ or -")
    return value


def _version(record: dict, name: str) -> int:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"`{name}` must be a version number (0 or more), got {value!r}")
    return value


# Keys only a call or a chat carries: a record with any of them and no `call_id`/`chat_id` is a broken
# conversation, never an agent, whatever else it has.
_CALL_KEYS = frozenset({
    "call_status", "call_type", "transcript_object", "call_analysis", "agent_version", "direction",
    "from_number", "to_number", "disconnection_reason", "duration_ms",
})
_CHAT_KEYS = frozenset({"chat_status", "chat_type", "messages", "message_with_tool_calls", "chat_analysis"})
_CONVERSATION_KEYS = _CALL_KEYS | _CHAT_KEYS | {"transcript", "start_timestamp", "end_timestamp"}
_TELLING_KEYS = frozenset({"call_status", "chat_status", "transcript", "transcript_object", "messages"})
_AGENT_CONFIG_KEYS = ("post_call_analysis_data", "post_chat_analysis_data")


def record_kind(record: Any) -> str:
    """AGENT, CALL or CHAT, decided strictly; a record that is none of them is a RecordError."""
    if not isinstance(record, dict):
        raise RecordError("a record must be a JSON object")
    if "call_id" in record and "chat_id" in record:
        raise RecordError("a record can't have both `call_id` and `chat_id`")
    if "call_id" in record:
        return "CALL"
    if "chat_id" in record:
        return "CHAT"
    # The telling keys first: a status or a transcript says "conversation" more plainly than a number does.
    marks = sorted((k for k in record if k in _CONVERSATION_KEYS), key=lambda k: (k not in _TELLING_KEYS, k))
    if marks:
        what = "a chat" if _CHAT_KEYS & set(marks) else "a call" if _CALL_KEYS & set(marks) else "a call or chat"
        keys = ", ".join(f"`{k}`" for k in marks[:4])
        raise RecordError(f"looks like {what} ({keys}) but has no `{'chat_id' if what == 'a chat' else 'call_id'}`")
    if "agent_id" not in record:
        raise RecordError("not an agent (agent_id), a call (call_id) or a chat (chat_id)")
    if "version" not in record:
        raise RecordError("an agent record needs its `version`")
    if not any(key in record for key in _AGENT_CONFIG_KEYS):
        raise RecordError(
            "an agent record needs its analysis config, `post_call_analysis_data` (voice) or "
            "`post_chat_analysis_data` (chat); [] means the built-in defaults"
        )
    return "AGENT"


def parse_agent_version(record: dict) -> dict[str, Any]:
    """One agent version; `given` names the optional fields the record carries (the others keep what is stored)."""
    agent_id = _id(record, "agent_id")
    call_keys = [k for k in record if k.startswith("post_call_analysis_")]
    chat_keys = [k for k in record if k.startswith("post_chat_analysis_")]
    if call_keys and chat_keys:
        raise RecordError("an agent record has either post_call_analysis_* (voice) or post_chat_analysis_* (chat) fields, not both")
    is_chat = bool(chat_keys)
    prefix = "post_chat" if is_chat else "post_call"
    items = record.get(f"{prefix}_analysis_data") or []
    if not isinstance(items, list):
        raise RecordError(f"`{prefix}_analysis_data` must be a list")
    prompts: dict[str, str | None] = dict.fromkeys(PROMPT_KEYS)
    fields = []
    for item in items:
        if not isinstance(item, dict):
            raise RecordError(f"`{prefix}_analysis_data` items must be objects")
        kind = item.get("type")
        if kind == "system-presets":
            name = str(item.get("name", ""))
            key = (
                "summary_prompt" if name.endswith("_summary")
                else "successful_prompt" if name.endswith("_successful")
                else "user_sentiment_prompt" if name == "user_sentiment"
                else None
            )
            if key is None:
                raise RecordError(f"unknown system preset {name!r}")
            prompts[key] = item.get("description") or None
        else:
            fields.append({**item, "type": str(kind or "").upper()})
    model_given = record.get(f"{prefix}_analysis_model") is not None
    try:
        for key, value in prompts.items():
            prompts[key] = validate_prompt(value, argument=key)
        data_fields = [f.to_json() for f in validate_data_fields(fields, argument=f"{prefix}_analysis_data")]
        model = validate_model(record.get(f"{prefix}_analysis_model") or DEFAULT_MODEL, argument=f"{prefix}_analysis_model")
    except ApiError as exc:
        raise RecordError(exc.message) from exc
    published = record.get("is_published", False)
    if not isinstance(published, bool):
        raise RecordError("`is_published` must be true or false")
    name = _str(record, "agent_name", max_len=200)
    title = _str(record, "version_title", max_len=200)
    given = {"name"} if name else set()
    given |= {"title"} if "version_title" in record else set()
    given |= {"model"} if model_given else set()
    return {
        "agent_id": agent_id,
        "name": name or agent_id,
        "channel": "CHAT" if is_chat else "VOICE",
        "version": _version(record, "version"),
        "is_published": published,
        "title": title,
        "data_fields": data_fields,
        "model": model,
        "given": frozenset(given),
        "success_rubric": None,
        "rationale": "NONE",
        **prompts,
    }


def _utterances(items: Any, name: str) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise RecordError(f"`{name}` must be a list")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise RecordError(f"`{name}` items must be objects with a `role`")
        # Tool invocations and results are not part of what the analysis reads.
        if item["role"] not in ("agent", "user"):
            continue
        if not isinstance(item.get("content", ""), str):
            raise RecordError(f"`{name}` items need a text `content`")
        out.append(item)
    return out


def _transcript_from(utterances: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{u['role'].title()}: {u.get('content', '')}" for u in utterances)


# The stored columns of a conversation and the record keys that carry them (a call's, then a chat's).
_CONVERSATION_COLUMNS = {
    "agent_version": ("agent_version", "version"),
    "conversation_type": ("call_type", "chat_type"),
    "direction": ("direction", "direction"),
    "from_number": ("from_number", "from_number"),
    "to_number": ("to_number", "to_number"),
    "started_at": ("start_timestamp", "start_timestamp"),
    "ended_at": ("end_timestamp", "end_timestamp"),
    "duration_ms": ("duration_ms", "duration_ms"),
    "disconnection_reason": ("disconnection_reason", "disconnection_reason"),
    "metadata": ("metadata", "metadata"),
}


def parse_conversation(record: dict) -> dict[str, Any]:
    """One call or chat; `given` names the columns the record carries (the others keep what is stored)."""
    is_call = "call_id" in record
    kind = "CALL" if is_call else "CHAT"
    status_name = "call_status" if is_call else "chat_status"
    status = record.get(status_name)
    allowed = CALL_STATUSES if is_call else CHAT_STATUSES
    if status not in allowed:
        raise RecordError(f"`{status_name}` must be one of {', '.join(sorted(allowed))}, got {status!r}")
    utterance_key = "transcript_object" if is_call else ("messages" if "messages" in record else "message_with_tool_calls")
    utterances = _utterances(record.get(utterance_key), utterance_key)
    transcript = _str(record, "transcript", max_len=1_000_000)
    if transcript is None:
        transcript = _transcript_from(utterances)
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RecordError("`metadata` must be an object")
    started, ended = _ms(record.get("start_timestamp"), "start_timestamp"), _ms(record.get("end_timestamp"), "end_timestamp")
    if started and ended and ended < started:
        raise RecordError("`end_timestamp` is before `start_timestamp`")
    duration = record.get("duration_ms")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int) or duration < 0):
        raise RecordError("`duration_ms` must be a whole number of milliseconds")
    given = {column for column, keys in _CONVERSATION_COLUMNS.items() if keys[0 if is_call else 1] in record}
    if duration is None and started and ended:
        duration = int((ended - started).total_seconds() * 1000)
        given.add("duration_ms")
    if utterance_key in record:
        given |= {"utterances", "transcript"}
    if "transcript" in record:
        given.add("transcript")
    direction = record.get("direction")
    if direction not in (None, "inbound", "outbound"):
        raise RecordError("`direction` must be inbound or outbound")
    analysis = record.get("call_analysis" if is_call else "chat_analysis")
    if analysis is not None and not isinstance(analysis, dict):
        raise RecordError("the analysis must be an object")
    return {
        "conversation_id": _id(record, "call_id" if is_call else "chat_id"),
        "kind": kind,
        "agent_id": _id(record, "agent_id"),
        "agent_version": _version(record, "agent_version" if is_call else "version")
        if ("agent_version" if is_call else "version") in record
        else None,
        "conversation_type": _str(record, "call_type" if is_call else "chat_type", max_len=64),
        "status": status,
        "direction": direction,
        "from_number": _str(record, "from_number", max_len=64),
        "to_number": _str(record, "to_number", max_len=64),
        "started_at": started,
        "ended_at": ended,
        "duration_ms": duration,
        "disconnection_reason": _str(record, "disconnection_reason", max_len=200),
        "transcript": transcript,
        "utterances": utterances,
        "metadata": metadata,
        "analysis": _imported_outcome(analysis, kind) if analysis else None,
        "given": frozenset(given),
    }


def _imported_outcome(analysis: dict[str, Any], kind: str) -> dict[str, Any]:
    prefix = "call" if kind == "CALL" else "chat"
    sentiment = analysis.get("user_sentiment")
    sentiment = _SENTIMENTS.get(str(sentiment).lower(), "UNKNOWN") if sentiment is not None else "UNKNOWN"
    custom = analysis.get("custom_analysis_data") or {}
    if not isinstance(custom, dict):
        raise RecordError("`custom_analysis_data` must be an object")
    successful = analysis.get(f"{prefix}_successful")
    voicemail = analysis.get("in_voicemail")
    return {
        "summary": analysis.get(f"{prefix}_summary"),
        "successful": successful if isinstance(successful, bool) else None,
        "user_sentiment": sentiment,
        "in_voicemail": voicemail if isinstance(voicemail, bool) and kind == "CALL" else None,
        "custom_data": custom,
    }


# ---- writing ----------------------------------------------------------------------------------

# The columns a conversation record may leave out (the stored value stays), and every column it is
# compared on (a record that matches the stored row changes nothing).
_OPTIONAL_KEYS = frozenset({"transcript", "utterances", *_CONVERSATION_COLUMNS})
_ROW_KEYS = ("agent_id", "kind", "status", *sorted(_OPTIONAL_KEYS))


# What a config key recorded before it existed stands for.
_UNSET_CONFIG = {"rationale": "NONE"}


def _their_config(parsed: dict[str, Any], stored: Any) -> dict[str, Any]:
    """The config an agent record asks for, the stored model standing in when the record names none."""
    config = {key: parsed[key] for key in CONFIG_KEYS}
    if "model" not in parsed["given"]:
        config["model"] = stored["model"]
    # A Retell record knows no rubric or rationale setting: the stored ones stay.
    config["success_rubric"], config["rationale"] = stored["success_rubric"], stored["rationale"]
    return config


class Importer:
    """Writes parsed records into one workspace.

    A draft record whose config differs replaces the draft's config, recorded in the draft's
    configChanges (before and after) and reported as a notice, unless that config is one the draft
    already had here (the file is older than an edit made here): then the draft is kept.
    With `fill_only` (what `seed` uses) no stored row changes: only what is missing is added.
    `progress`, when given, is told after each record and each initial analysis (the CLI's progress bar).
    """

    def __init__(
        self, *, db: Database, workspace_id: int, analyzer: Analyzer, concurrency: int = 8, fill_only: bool = False,
        progress: Progress | None = None,
    ):
        self.db = db
        self.workspace_id = workspace_id
        self.analyzer = analyzer
        self.concurrency = concurrency
        self.fill_only = fill_only
        self.progress = progress or (lambda stage, done, total: None)
        self.report = ImportReport()
        self._agents: dict[str, tuple[str, dict[int, Any]]] = {}

    async def run(self, records: list[tuple[int, Any]]) -> ImportReport:
        agents: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        conversations: list[tuple[int, dict]] = []
        for line, record in records:
            try:
                if record_kind(record) == "AGENT":
                    parsed = parse_agent_version(record)
                    agents[parsed["agent_id"]].append((line, parsed))
                else:
                    conversations.append((line, parse_conversation(record)))
            except RecordError as exc:
                self.report.errors.append((line, str(exc)))
        done = len(self.report.errors)  # the records already skipped
        self.progress("records", done, len(records))
        for agent_id, versions in agents.items():
            await self._import_agent(agent_id, sorted(versions, key=lambda lv: lv[1]["version"]))
            done += len(versions)
            self.progress("records", done, len(records))
        stored = await self._stored_conversations([conv["conversation_id"] for _, conv in conversations])
        to_analyze = []
        for line, conv in conversations:
            try:
                if await self._import_conversation(line, conv, stored):
                    to_analyze.append(conv)
            except RecordError as exc:
                self.report.errors.append((line, str(exc)))
            done += 1
            self.progress("records", done, len(records))
        await self._analyze_all(to_analyze)
        self.report.errors.sort()
        self.report.notices.sort()
        return self.report

    def _kept(self, line: int, reason: str) -> None:
        self.report.unchanged += 1
        self.report.notices.append((line, f"kept: {reason}"))

    async def _import_agent(self, agent_id: str, versions: list[tuple[int, dict]]) -> None:
        ws = self.workspace_id
        async with self.db.transaction():
            row = await self.db.fetch_one("agents_by_ids", workspace_id=ws, agent_ids=[agent_id])
            channel = row["channel"] if row is not None else versions[-1][1]["channel"]
            fitting = []
            for line, parsed in versions:
                if parsed["channel"] == channel:
                    fitting.append((line, parsed))
                else:
                    where = "here" if row is not None else "in its newest record"
                    self.report.errors.append(
                        (line, f"agent {agent_id} is a {channel} agent {where}; the record is for {parsed['channel']}")
                    )
            if not fitting:
                return
            names = [(line, parsed["name"]) for line, parsed in fitting if "name" in parsed["given"]]
            if row is None:
                name = names[-1][1] if names else agent_id
                await self.db.fetch_one("agent_upsert", workspace_id=ws, agent_id=agent_id, name=name, channel=channel)
                self.report.agents += 1
            elif names and names[-1][1] != row["name"]:
                line, name = names[-1]
                if self.fill_only:
                    self.report.notices.append((line, f"kept: agent {agent_id} keeps its name {row['name']!r}"))
                else:
                    await self.db.fetch_one("agent_upsert", workspace_id=ws, agent_id=agent_id, name=name, channel=channel)
                    self.report.agents += 1
            for line, parsed in fitting:
                try:
                    await self._import_version(line, parsed)
                except RecordError as exc:
                    self.report.errors.append((line, str(exc)))
            if await self.db.fetch_one("agent_draft_ensure", workspace_id=ws, agent_id=agent_id) is not None:
                self.report.versions += 1

    async def _import_version(self, line: int, parsed: dict[str, Any]) -> None:
        ws, agent_id, version = self.workspace_id, parsed["agent_id"], parsed["version"]
        existing = await self.db.fetch_one("agent_version_get", workspace_id=ws, agent_id=agent_id, version=version)
        if existing is not None and existing["is_published"]:
            if config_of(existing) == _their_config(parsed, existing):
                self.report.unchanged += 1
            elif self.fill_only:
                self._kept(line, f"version {version} of agent {agent_id} is published here with another analysis config")
            else:
                raise RecordError(
                    f"version {version} of agent {agent_id} is published here with another analysis config; "
                    "published versions can't change (import it as a new version)"
                )
            return
        if existing is not None:
            await self._import_into_draft(line, parsed, existing)
            return
        drafts = await self.db.fetch_all("drafts_of_agents", workspace_id=ws, agent_ids=[agent_id])
        draft = drafts[0] if drafts else None
        if draft is not None and draft["version"] < version:
            if self.fill_only:
                self._kept(line, f"adding version {version} of agent {agent_id} would publish its draft (version {draft['version']})")
                return
            # A newer version exists upstream: what was drafted here is frozen as it stands.
            await self.db.fetch_one("agent_draft_publish", workspace_id=ws, agent_id=agent_id)
            self.report.versions += 1
            draft = None
        await self.db.fetch_one(
            "agent_version_insert",
            workspace_id=ws,
            agent_id=agent_id,
            version=version,
            # Below the draft, a version can only be a published one.
            is_published=parsed["is_published"] or draft is not None,
            title=parsed["title"],
            **{key: parsed[key] for key in CONFIG_KEYS},
        )
        self.report.versions += 1

    async def _import_into_draft(self, line: int, parsed: dict[str, Any], draft: Any) -> None:
        ws, agent_id, version = self.workspace_id, parsed["agent_id"], parsed["version"]
        ours, theirs = config_of(draft), _their_config(parsed, draft)
        title = parsed["title"] if "title" in parsed["given"] else draft["title"]
        if theirs == ours and title == draft["title"]:
            if not parsed["is_published"]:
                self.report.unchanged += 1
                return
            if self.fill_only:
                self._kept(line, f"version {version} of agent {agent_id} stays a draft")
                return
        elif self.fill_only:
            self._kept(line, f"the draft (version {version}) of agent {agent_id} differs from the record")
            return
        elif theirs != ours and not parsed["is_published"] and theirs in await self._earlier_configs(agent_id, version):
            self._kept(
                line,
                f"the draft (version {version}) of agent {agent_id} has moved on from the config this record "
                "carries (see its configChanges)",
            )
            return
        else:
            await self.db.fetch_one("agent_draft_update", workspace_id=ws, agent_id=agent_id, version=version, title=title, **theirs)
            changed = [key for key in CONFIG_KEYS if theirs[key] != ours[key]]
            if changed:
                await self.db.execute(
                    "agent_version_change_insert",
                    workspace_id=ws,
                    agent_id=agent_id,
                    version=version,
                    changed_fields=changed,
                    before_config=ours,
                    after_config=theirs,
                    origin="seed" if self.fill_only else "import",
                )
                self.report.notices.append((
                    line,
                    f"updated draft: version {version} of agent {agent_id} takes the imported {', '.join(changed)}; "
                    "the config before is in its configChanges",
                ))
        if parsed["is_published"]:
            await self.db.fetch_one("agent_draft_publish", workspace_id=ws, agent_id=agent_id)
        self.report.versions += 1

    async def _earlier_configs(self, agent_id: str, version: int) -> list[dict[str, Any]]:
        """Every config this version had before its current one, from its recorded changes."""
        rows = await self.db.fetch_all(
            "agent_version_changes_of", workspace_id=self.workspace_id, agent_ids=[agent_id], versions=[version]
        )
        return [{key: row["before_config"].get(key, _UNSET_CONFIG.get(key)) for key in CONFIG_KEYS} for row in rows] + [
            {key: row["after_config"].get(key, _UNSET_CONFIG.get(key)) for key in CONFIG_KEYS} for row in rows
        ]

    async def _stored_conversations(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored rows of these conversations, read before anything is written."""
        stored: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 1000):
            rows = await self.db.fetch_all(
                "conversations_by_ids", workspace_id=self.workspace_id, conversation_ids=ids[start : start + 1000]
            )
            stored.update((row["conversation_id"], dict(row)) for row in rows)
        return stored

    async def _agent_versions(self, agent_id: str) -> tuple[str, dict[int, Any]]:
        """The agent's channel and versions, read once per import."""
        if agent_id not in self._agents:
            ws = self.workspace_id
            agent = await self.db.fetch_one("agents_by_ids", workspace_id=ws, agent_ids=[agent_id])
            if agent is None:
                raise RecordError(f"agent {agent_id} is unknown here; import the agent too (in any order, same file)")
            versions = await self.db.fetch_all("agent_versions_of_agents", workspace_id=ws, agent_ids=[agent_id])
            self._agents[agent_id] = (agent["channel"], {v["version"]: v for v in versions})
        return self._agents[agent_id]

    async def _import_conversation(self, line: int, conv: dict[str, Any], stored_rows: dict[str, dict[str, Any]]) -> bool:
        """Upsert one call or chat; True when it still needs its initial analysis run."""
        stored = stored_rows.get(conv["conversation_id"])
        if stored is not None:
            if stored["kind"] != conv["kind"]:
                raise RecordError(f"id {conv['conversation_id']} already belongs to a {stored['kind'].lower()}")
            if self.fill_only:
                carried = {"agent_id", "status", *conv["given"]}
                if any(conv[key] != stored[key] for key in carried):
                    self.report.notices.append((line, f"kept: {conv['kind'].lower()} {conv['conversation_id']} differs from the record"))
                conv.update({key: stored[key] for key in _ROW_KEYS})
            else:
                # A record changes only what it carries.
                conv.update({key: stored[key] for key in _OPTIONAL_KEYS - conv["given"]})
        channel, by_version = await self._agent_versions(conv["agent_id"])
        if (channel == "VOICE") != (conv["kind"] == "CALL"):
            raise RecordError(f"agent {conv['agent_id']} is a {channel} agent; it can't have {conv['kind'].lower()}s")
        draft_version = max(by_version)
        if conv["agent_version"] is None:
            conv["agent_version"] = max((v for v, row in by_version.items() if row["is_published"]), default=draft_version)
        version = conv["agent_version"]
        changed = stored is None or any(conv[key] != stored[key] for key in _ROW_KEYS)
        async with self.db.transaction():
            needs_analysis, placeholder = await self._write_conversation(conv, by_version, version, draft_version, changed)
        if placeholder is not None:
            by_version[version] = placeholder  # only once it is committed
            self.report.versions += 1
        stored_rows[conv["conversation_id"]] = {key: conv[key] for key in _ROW_KEYS}
        return needs_analysis

    async def _write_conversation(
        self, conv: dict[str, Any], by_version: dict[int, Any], version: int, draft_version: int, changed: bool
    ) -> tuple[bool, Any]:
        """Inside the caller's transaction: the placeholder version if needed, the conversation, its imported analysis."""
        ws = self.workspace_id
        placeholder = None
        if version not in by_version:
            if version > draft_version:
                raise RecordError(
                    f"version {version} of agent {conv['agent_id']} is newer than its draft ({draft_version}); "
                    "import that agent version first"
                )
            # The export didn't include this older version: keep a frozen copy of the next one so
            # the conversation points at a real version.
            template = by_version[min(v for v in by_version if v > version)]
            placeholder = await self.db.fetch_one(
                "agent_version_insert",
                workspace_id=ws,
                agent_id=conv["agent_id"],
                version=version,
                is_published=True,
                title=f"placeholder: not in the import (config copied from version {template['version']})",
                **{k: template[k] for k in CONFIG_KEYS},
            )
        if not changed:
            self.report.unchanged += 1
        else:
            row = await self.db.fetch_one(
                "conversation_upsert",
                workspace_id=ws,
                **{k: v for k, v in conv.items() if k not in ("analysis", "given")},
            )
            if row is None:
                other = "chat" if conv["kind"] == "CALL" else "call"
                raise RecordError(f"id {conv['conversation_id']} already belongs to a {other}")
            if conv["kind"] == "CALL":
                self.report.calls += 1
            else:
                self.report.chats += 1
        if await self.db.fetch_val("has_initial_analysis", workspace_id=ws, conversation_id=conv["conversation_id"]):
            return False, placeholder
        if conv["analysis"] is not None:
            await record_result(
                db=self.db,
                workspace_id=ws,
                conversation_id=conv["conversation_id"],
                trigger="INITIAL",
                agent_id=conv["agent_id"],
                agent_version=version,
                outcome=AnalysisOutcome(model=(placeholder or by_version[version])["model"], **conv["analysis"]),
                waive=True,
            )
            self.report.analyses_imported += 1
            return False, placeholder
        return conv["status"] in ANALYZABLE_STATUSES, placeholder

    async def _analyze_all(self, conversations: list[dict[str, Any]]) -> None:
        if not conversations:
            return
        ws = self.workspace_id
        keys = sorted({(c["agent_id"], c["agent_version"]) for c in conversations})
        rows = await self.db.fetch_all(
            "agent_versions_by_keys", workspace_id=ws, agent_ids=[k[0] for k in keys], versions=[k[1] for k in keys]
        )
        configs = {(r["agent_id"], r["version"]): effective_config(r) for r in rows}
        semaphore = asyncio.Semaphore(self.concurrency)
        started = time.monotonic()
        done = failed = 0
        total = len(conversations)

        async def one(conv: dict[str, Any]) -> None:
            nonlocal done, failed
            async with semaphore:
                try:
                    outcome = await self.analyzer.analyze(
                        conversation_for_analysis(conv), configs[(conv["agent_id"], conv["agent_version"])]
                    )
                except AnalysisError as exc:
                    failed += 1
                    self.report.analyses_failed += 1
                    log.warning("initial_analysis_failed", conversation=conv["conversation_id"], error=str(exc))
                    await record_failed_run(
                        db=self.db, workspace_id=ws, conversation_id=conv["conversation_id"], trigger="INITIAL", error=exc
                    )
                    return
                try:
                    await record_result(
                        db=self.db,
                        workspace_id=ws,
                        conversation_id=conv["conversation_id"],
                        trigger="INITIAL",
                        agent_id=conv["agent_id"],
                        agent_version=conv["agent_version"],
                        outcome=outcome,
                    )
                except asyncpg.UniqueViolationError:
                    log.info("initial_analysis_exists", conversation=conv["conversation_id"], reason="another import stored it first")
                    return
                done += 1
                self.report.analyses_run += 1
                if done % 100 == 0:
                    log.info("initial_analysis_progress", done=done, of=total, failed=failed, seconds=round(time.monotonic() - started, 1))

        finished = 0

        async def counted(conv: dict[str, Any]) -> None:
            nonlocal finished
            await one(conv)
            finished += 1
            self.progress("analyses", finished, total)

        self.progress("analyses", 0, total)
        await asyncio.gather(*(counted(c) for c in conversations))
        log.info("initial_analysis_finished", done=done, failed=failed, seconds=round(time.monotonic() - started, 1))


async def import_text(
    *, db: Database, workspace_id: int, text: str, analyzer: Analyzer, concurrency: int = 8, progress: Progress | None = None
) -> ImportReport:
    records, read_errors = read_records(text)
    report = await Importer(
        db=db, workspace_id=workspace_id, analyzer=analyzer, concurrency=concurrency, progress=progress
    ).run(records)
    report.errors = sorted(read_errors + report.errors)
    return report


async def import_file(*, db: Database, workspace_id: int, path: Path, analyzer: Analyzer, concurrency: int = 8) -> ImportReport:
    text = path.read_text(encoding="utf-8")
    return await import_text(db=db, workspace_id=workspace_id, text=text, analyzer=analyzer, concurrency=concurrency)
