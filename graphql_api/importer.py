"""Import of agents, calls and chats in Retell's export shape, idempotent by id.

A file is one JSON object, a JSON array or JSON lines. Bad records are reported with their line
and reason; good ones are imported. Conversations that arrive without an analysis get an initial
run with the config of the version that handled them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from graphql_api.analysis.base import AnalysisError, AnalysisOutcome, Analyzer, Conversation, Utterance
from graphql_api.analysis.config import effective_config, validate_data_fields, validate_model, validate_prompt
from graphql_api.analysis.pricing import DEFAULT_MODEL
from graphql_api.analysis.results import record_result
from graphql_api.db import Database
from graphql_api.errors import ApiError

log = logging.getLogger(__name__)

CALL_STATUSES = {"registered", "not_connected", "ongoing", "ended", "error"}
CHAT_STATUSES = {"ongoing", "ended", "error"}
# Conversations still in progress have nothing final to analyze yet.
ANALYZABLE_STATUSES = {"not_connected", "ended", "error"}
_SENTIMENTS = {"positive": "POSITIVE", "negative": "NEGATIVE", "neutral": "NEUTRAL", "unknown": "UNKNOWN"}


class RecordError(Exception):
    """A record that can't be imported, with the reason a person can act on."""


@dataclass
class ImportReport:
    agent_versions: int = 0
    agents: set[str] = field(default_factory=set)
    calls: int = 0
    chats: int = 0
    analyses_imported: int = 0
    analyses_run: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"imported agents={len(self.agents)} versions={self.agent_versions} calls={self.calls} "
            f"chats={self.chats} analyses_imported={self.analyses_imported} analyses_run={self.analyses_run} "
            f"unchanged_versions={self.unchanged} errors={len(self.errors)}"
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


def parse_agent_version(record: dict) -> dict[str, Any]:
    agent_id = _id(record, "agent_id")
    is_chat = "post_chat_analysis_data" in record or "post_chat_analysis_model" in record
    prefix = "post_chat" if is_chat else "post_call"
    items = record.get(f"{prefix}_analysis_data") or []
    if not isinstance(items, list):
        raise RecordError(f"`{prefix}_analysis_data` must be a list")
    prompts: dict[str, str | None] = {"summary_prompt": None, "successful_prompt": None, "user_sentiment_prompt": None}
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
    return {
        "agent_id": agent_id,
        "name": _str(record, "agent_name", max_len=200) or agent_id,
        "channel": "CHAT" if is_chat else "VOICE",
        "version": _version(record, "version") if "version" in record else 0,
        "is_published": published,
        "title": _str(record, "version_title", max_len=200),
        "data_fields": data_fields,
        "model": model,
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


def parse_conversation(record: dict) -> dict[str, Any]:
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
    if duration is None and started and ended:
        duration = int((ended - started).total_seconds() * 1000)
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
        duration_ms=row["duration_ms"],
    )


# ---- writing ----------------------------------------------------------------------------------

_CONFIG_KEYS = ("summary_prompt", "successful_prompt", "user_sentiment_prompt", "data_fields", "model")


def _same_config(row: Any, parsed: dict[str, Any]) -> bool:
    return all(row[k] == parsed[k] for k in _CONFIG_KEYS)


class Importer:
    def __init__(self, *, db: Database, workspace_id: int, analyzer: Analyzer, concurrency: int = 8):
        self.db = db
        self.workspace_id = workspace_id
        self.analyzer = analyzer
        self.concurrency = concurrency
        self.report = ImportReport()
        self._agents: dict[str, tuple[str, dict[int, Any]]] = {}

    async def run(self, records: list[tuple[int, Any]]) -> ImportReport:
        agents: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        conversations: list[tuple[int, dict]] = []
        for line, record in records:
            try:
                if not isinstance(record, dict):
                    raise RecordError("a record must be a JSON object")
                if "call_id" in record or "chat_id" in record:
                    conversations.append((line, parse_conversation(record)))
                elif "agent_id" in record:
                    parsed = parse_agent_version(record)
                    agents[parsed["agent_id"]].append((line, parsed))
                else:
                    raise RecordError("not an agent (agent_id), a call (call_id) or a chat (chat_id)")
            except RecordError as exc:
                self.report.errors.append((line, str(exc)))
        for agent_id, versions in agents.items():
            await self._import_agent(agent_id, sorted(versions, key=lambda lv: lv[1]["version"]))
        to_analyze = []
        for line, conv in conversations:
            try:
                if await self._import_conversation(conv):
                    to_analyze.append(conv)
            except RecordError as exc:
                self.report.errors.append((line, str(exc)))
        await self._analyze_all(to_analyze)
        self.report.errors.sort()
        return self.report

    async def _import_agent(self, agent_id: str, versions: list[tuple[int, dict]]) -> None:
        ws = self.workspace_id
        async with self.db.transaction():
            newest = versions[-1][1]
            row = await self.db.fetch_one(
                "agent_upsert", workspace_id=ws, agent_id=agent_id, name=newest["name"], channel=newest["channel"]
            )
            if row["channel"] != newest["channel"]:
                for line, _ in versions:
                    self.report.errors.append(
                        (line, f"agent {agent_id} is a {row['channel']} agent here; the record is for {newest['channel']}")
                    )
                return
            self.report.agents.add(agent_id)
            for line, parsed in versions:
                try:
                    await self._import_version(parsed)
                except RecordError as exc:
                    self.report.errors.append((line, str(exc)))
            await self.db.fetch_one("agent_draft_ensure", workspace_id=ws, agent_id=agent_id)

    async def _import_version(self, parsed: dict[str, Any]) -> None:
        ws, agent_id, version = self.workspace_id, parsed["agent_id"], parsed["version"]
        values = {k: parsed[k] for k in ("title", *_CONFIG_KEYS)}
        existing = await self.db.fetch_one("agent_version_get", workspace_id=ws, agent_id=agent_id, version=version)
        if existing is not None and existing["is_published"]:
            if not _same_config(existing, parsed):
                raise RecordError(
                    f"version {version} of agent {agent_id} is published here with another analysis config; "
                    "published versions can't change (import it as a new version)"
                )
            self.report.unchanged += 1
            return
        drafts = await self.db.fetch_all("drafts_of_agents", workspace_id=ws, agent_ids=[agent_id])
        draft = drafts[0] if drafts else None
        if draft is not None and draft["version"] < version:
            # A newer version exists upstream: what was drafted here is frozen as it stands.
            await self.db.fetch_one("agent_draft_publish", workspace_id=ws, agent_id=agent_id)
            draft = None
        if existing is None:
            newer = draft is not None and draft["version"] > version
            await self.db.fetch_one(
                "agent_version_insert",
                workspace_id=ws,
                agent_id=agent_id,
                version=version,
                is_published=parsed["is_published"] or newer or draft is not None,
                **values,
            )
        else:
            if not _same_config(existing, parsed) or existing["title"] != parsed["title"]:
                await self.db.fetch_one("agent_draft_update", workspace_id=ws, agent_id=agent_id, version=version, **values)
            elif not parsed["is_published"]:
                self.report.unchanged += 1
                return
            if parsed["is_published"]:
                await self.db.fetch_one("agent_draft_publish", workspace_id=ws, agent_id=agent_id)
        self.report.agent_versions += 1

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

    async def _import_conversation(self, conv: dict[str, Any]) -> bool:
        """Upsert one call or chat; True when it still needs its initial analysis run."""
        channel, by_version = await self._agent_versions(conv["agent_id"])
        if (channel == "VOICE") != (conv["kind"] == "CALL"):
            raise RecordError(f"agent {conv['agent_id']} is a {channel} agent; it can't have {conv['kind'].lower()}s")
        draft_version = max(by_version)
        if conv["agent_version"] is None:
            conv["agent_version"] = max((v for v, row in by_version.items() if row["is_published"]), default=draft_version)
        version = conv["agent_version"]
        async with self.db.transaction():
            needs_analysis, placeholder = await self._write_conversation(conv, by_version, version, draft_version)
        if placeholder is not None:
            by_version[version] = placeholder  # only once it is committed
        return needs_analysis

    async def _write_conversation(
        self, conv: dict[str, Any], by_version: dict[int, Any], version: int, draft_version: int
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
                **{k: template[k] for k in _CONFIG_KEYS},
            )
        row = await self.db.fetch_one(
            "conversation_upsert",
            workspace_id=ws,
            **{k: v for k, v in conv.items() if k != "analysis"},
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
                    log.warning("initial_analysis_failed conversation=%s error=%s", conv["conversation_id"], exc)
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
                    log.info("initial_analysis_exists conversation=%s: another import stored it first", conv["conversation_id"])
                    return
                done += 1
                self.report.analyses_run += 1
                if done % 100 == 0:
                    log.info("initial_analysis_progress done=%d of=%d failed=%d seconds=%.1f", done, total, failed, time.monotonic() - started)

        await asyncio.gather(*(one(c) for c in conversations))
        log.info("initial_analysis_finished done=%d failed=%d seconds=%.1f", done, failed, time.monotonic() - started)


async def import_file(*, db: Database, workspace_id: int, path: Path, analyzer: Analyzer, concurrency: int = 8) -> ImportReport:
    records, read_errors = read_records(path.read_text(encoding="utf-8"))
    report = await Importer(db=db, workspace_id=workspace_id, analyzer=analyzer, concurrency=concurrency).run(records)
    report.errors = sorted(read_errors + report.errors)
    return report
