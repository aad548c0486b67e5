"""The GraphQL object types clients see, mapped from database rows, and how their edges are fetched.

Fields that point at other rows return what the parent already fetched when it did, and ask the
operation's DataLoader otherwise, so a page costs a fixed number of queries either way.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
import asyncio
from collections.abc import Iterable
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from graphql_api.analysis import base
from graphql_api.analysis.config import optional_key
from graphql_api.errors import NotFound, not_found
from graphql_api.schema.context import Info
from graphql_api.schema.enums import (
    AnalysisTrigger,
    Channel,
    ConfigChangeOrigin,
    ConversationStatus,
    DataFieldType,
    LikertLevel,
    RationaleMode,
    RubricType,
    UserSentiment,
    Verdict,
)
from graphql_api.schema.filters import ConversationFilter, Kind, selection_of
from graphql_api.schema.pagination import Connection, Keyset

@strawberry.type(description="A custom field the analysis extracts from each conversation.")
class DataField:
    name: str
    type: DataFieldType
    description: str
    examples: list[str]
    choices: list[str] | None = strawberry.field(description="The allowed values; ENUM fields only.")
    required: bool = strawberry.field(description="When the analysis leaves it empty, the conversation is unsuccessful.")


@strawberry.type(description="The prompts, custom fields and model of one agent version's analysis.")
class AnalysisConfig:
    summary_prompt: str
    successful_prompt: str
    user_sentiment_prompt: str
    summary_prompt_is_default: bool
    successful_prompt_is_default: bool
    user_sentiment_prompt_is_default: bool
    data_fields: list[DataField]
    model: str
    success_rubric: SuccessRubric | None = strawberry.field(
        description="How success is judged; null: the yes/no successfulPrompt."
    )
    rationale: RationaleMode = strawberry.field(description="Which outputs come back with a rationale.")

    @classmethod
    def from_row(cls, row: Any) -> AnalysisConfig:
        return cls(
            success_rubric=SuccessRubric.of(base.SuccessRubric.from_json(optional_key(row, "success_rubric"))),
            rationale=RationaleMode(optional_key(row, "rationale") or "NONE"),
            summary_prompt=row["summary_prompt"] or base.DEFAULT_SUMMARY_PROMPT,
            successful_prompt=row["successful_prompt"] or base.DEFAULT_SUCCESSFUL_PROMPT,
            user_sentiment_prompt=row["user_sentiment_prompt"] or base.DEFAULT_USER_SENTIMENT_PROMPT,
            summary_prompt_is_default=row["summary_prompt"] is None,
            successful_prompt_is_default=row["successful_prompt"] is None,
            user_sentiment_prompt_is_default=row["user_sentiment_prompt"] is None,
            data_fields=[
                DataField(
                    name=f["name"],
                    type=DataFieldType(f["type"]),
                    description=f.get("description") or "",
                    examples=list(f.get("examples") or []),
                    choices=f.get("choices"),
                    required=bool(f.get("required")),
                )
                for f in row["data_fields"]
            ],
            model=row["model"],
        )


@strawberry.type(description="One criterion of a CHECKLIST rubric.")
class RubricCriterion:
    name: str
    prompt: str


@strawberry.type(description="How success is judged: the model answers on this scale; successful = score >= threshold.")
class SuccessRubric:
    type: RubricType
    threshold: float | None = strawberry.field(
        description="The lowest successful score as set; null for PASS_FAIL, and for LIKERT / CHECKLIST when their "
        "default applies (4, agree / all criteria)."
    )
    scale_min: int | None = strawberry.field(description="NUMERIC only.")
    scale_max: int | None = strawberry.field(description="NUMERIC only.")
    criteria: list[RubricCriterion] = strawberry.field(description="CHECKLIST only.")

    @classmethod
    def of(cls, rubric: base.SuccessRubric | None) -> SuccessRubric | None:
        if rubric is None:
            return None
        return cls(type=RubricType(rubric.type), threshold=rubric.threshold, scale_min=rubric.scale_min,
                   scale_max=rubric.scale_max, criteria=[RubricCriterion(name=c.name, prompt=c.prompt) for c in rubric.criteria])


@strawberry.type(description="Why the analysis answered an output as it did, grounded in the transcript.")
class Rationale:
    reason: str
    quote: str | None = strawberry.field(description="Words the model quoted from the transcript.")
    turn: int | None = strawberry.field(description="The 1-based transcript line (turn) the quote comes from.")
    quote_found: bool = strawberry.field(
        description="Whether the quote really is in the transcript (whitespace and case aside): false flags a reason "
        "that may not be grounded."
    )

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Rationale:
        return cls(reason=raw["reason"], quote=raw.get("quote"), turn=raw.get("turn"),
                   quote_found=bool(raw.get("quote_found")))


@strawberry.type(description="The rationale of one output.")
class OutputRationale(Rationale):
    output: str = strawberry.field(
        description="successful, userSentiment, customData.<field name> or criterion.<criterion name>."
    )


@strawberry.type(description="One checklist criterion's verdict.")
class CriterionVerdict:
    name: str
    verdict: Verdict
    rationale: Rationale | None


@strawberry.type(description="What a success rubric gave: the score on its scale and the threshold it was held to.")
class SuccessEvaluation:
    type: RubricType
    score: float | None = strawberry.field(
        description="PASS_FAIL: 1 or 0; NUMERIC / PERCENTAGE: the score; LIKERT: 1..5; CHECKLIST: criteria met. "
        "Null when the transcript did not tell."
    )
    threshold: float | None = strawberry.field(description="The lowest successful score the result was judged against.")
    scale_min: int | None
    scale_max: int | None
    verdict: Verdict | None = strawberry.field(description="PASS_FAIL only.")
    level: LikertLevel | None = strawberry.field(description="LIKERT only.")
    criteria: list[CriterionVerdict] = strawberry.field(description="CHECKLIST only, in the rubric's order.")

    @classmethod
    def of(cls, raw: dict[str, Any] | None, rationale: dict[str, Any] | None) -> SuccessEvaluation | None:
        if raw is None:
            return None
        explained = rationale or {}
        return cls(
            type=RubricType(raw["type"]),
            score=raw.get("score"),
            threshold=raw.get("threshold"),
            scale_min=raw.get("scale_min"),
            scale_max=raw.get("scale_max"),
            verdict=Verdict(raw["verdict"]) if raw.get("verdict") else None,
            level=LikertLevel(raw["level"]) if raw.get("level") else None,
            criteria=[
                CriterionVerdict(
                    name=c["name"], verdict=Verdict(c["verdict"]),
                    rationale=Rationale.of(explained[base.CRITERION_PREFIX + c["name"]])
                    if base.CRITERION_PREFIX + c["name"] in explained else None,
                )
                for c in raw.get("criteria") or []
            ],
        )


@strawberry.type(description="One edit of a draft's analysis config.")
class ConfigChange:
    changed_at: datetime
    changed_fields: list[str] = strawberry.field(
        description="summary_prompt, successful_prompt, user_sentiment_prompt, data_fields, model, success_rubric or "
        "rationale."
    )
    origin: ConfigChangeOrigin = strawberry.field(description="What made the edit.")
    before: AnalysisConfig
    after: AnalysisConfig

    @classmethod
    def from_row(cls, row: Any) -> ConfigChange:
        return cls(
            changed_at=row["changed_at"],
            changed_fields=list(row["changed_fields"]),
            origin=ConfigChangeOrigin[row["origin"].upper()],
            before=AnalysisConfig.from_row(row["before_config"]),
            after=AnalysisConfig.from_row(row["after_config"]),
        )


@strawberry.type(description="A numbered version of an agent. Published versions are frozen; the latest draft is editable.")
class AgentVersion:
    id: strawberry.ID = strawberry.field(description="`<agent id>@<version>`.")
    agent_id: strawberry.ID
    version: int
    is_published: bool
    is_latest_draft: bool
    title: str | None
    created_at: datetime
    published_at: datetime | None
    config_updated_at: datetime = strawberry.field(description="When this version's analysis config last changed.")
    revision: int = strawberry.field(
        description="1 when the version was made, +1 at each edit of its analysis config. Send it back as "
        "`expectedRevision` so that an edit or a publish based on a stale read is refused with CONFLICT."
    )
    analysis_config: AnalysisConfig

    @strawberry.field
    async def agent(self, info: Info) -> Agent:
        return await _load_agent(info, self.agent_id)

    @strawberry.field(description="Every edit of this version's analysis config, newest first.")
    async def config_changes(self, info: Info) -> list[ConfigChange]:
        rows = await info.context.loaders.config_changes.load((self.agent_id, self.version))
        return [ConfigChange.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, row: Any) -> AgentVersion:
        return cls(
            id=strawberry.ID(f"{row['agent_id']}@{row['version']}"),
            agent_id=strawberry.ID(row["agent_id"]),
            version=row["version"],
            is_published=row["is_published"],
            is_latest_draft=not row["is_published"],
            title=row["title"],
            created_at=row["created_at"],
            published_at=row["published_at"],
            config_updated_at=row["config_updated_at"],
            revision=row["revision"],
            analysis_config=AnalysisConfig.from_row(row),
        )


async def _load_version(info: Info, agent_id: str, version: int) -> AgentVersion:
    row = await info.context.loaders.version.load((agent_id, version))
    if row is None:
        raise NotFound(f"Version {version} of agent {agent_id!r} does not exist.")
    return AgentVersion.from_row(row)


async def _load_agent(info: Info, agent_id: str) -> Agent:
    row = await info.context.loaders.agent.load(agent_id)
    if row is None:
        raise NotFound(f"No agent with id {agent_id!r} in this workspace.")
    return Agent.from_row(row)


@strawberry.type(description="One analysis run over a conversation. Runs are never overwritten.")
class AnalysisResult:
    id: strawberry.ID
    conversation_id: strawberry.ID
    trigger: AnalysisTrigger
    model: str
    summary: str | None
    successful: bool | None
    user_sentiment: UserSentiment
    in_voicemail: bool | None = strawberry.field(description="Calls only; null for chats.")
    custom_data: JSON = strawberry.field(description="Custom field values keyed by field name.")
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    charged: bool = strawberry.field(description="False when the run was waived (initial run of an included model).")
    created_at: datetime
    _agent_id: strawberry.Private[str]
    _agent_version: strawberry.Private[int]
    _output_sources: strawberry.Private[dict[str, Any]]
    _output_fingerprints: strawberry.Private[dict[str, Any] | None]
    _evaluation: strawberry.Private[dict[str, Any] | None]
    _rationale: strawberry.Private[dict[str, Any] | None]

    @strawberry.field(description="The success rubric's answer, when the config judged success on one.")
    def evaluation(self) -> SuccessEvaluation | None:
        return SuccessEvaluation.of(self._evaluation, self._rationale)

    @strawberry.field(
        description="Why each explained output came out as it did (when the config asks for rationale), in response "
        "order: successful, userSentiment, then criteria and custom fields by name."
    )
    def rationale(self) -> list[OutputRationale]:
        explained = self._rationale or {}
        return [OutputRationale(output=name, **Rationale.of(explained[name]).__dict__) for name in output_order(explained)]

    @strawberry.field(description="The agent version whose analysis config produced this result.")
    async def agent_version(self, info: Info) -> AgentVersion:
        return await _load_version(info, self._agent_id, self._agent_version)

    @strawberry.field(
        description="Which run produced each output: this result's own model run, or (for a rerun of only some "
        "outputs) an earlier result it was carried over from. Outputs are named summary, successful, userSentiment, "
        "inVoicemail (calls) and customData.<field name>."
    )
    def output_sources(self) -> list[AnalysisOutputSource]:
        return [
            AnalysisOutputSource(
                output=name,
                result_id=strawberry.ID(str(self._output_sources.get(name, self.id))),
                carried_over=name in self._output_sources,
            )
            for name in output_order(self._output_fingerprints or {})
        ]

    @classmethod
    def from_row(cls, row: Any, prefix: str = "") -> AnalysisResult:
        p = prefix
        return cls(
            id=strawberry.ID(str(row[p + "id"])),
            conversation_id=strawberry.ID(row[p + "conversation_id"]),
            trigger=AnalysisTrigger(row[p + "trigger"]),
            model=row[p + "model"],
            summary=row[p + "summary"],
            successful=row[p + "successful"],
            user_sentiment=UserSentiment(row[p + "user_sentiment"]),
            in_voicemail=row[p + "in_voicemail"],
            custom_data=row[p + "custom_data"],
            input_tokens=row[p + "input_tokens"],
            output_tokens=row[p + "output_tokens"],
            cost_usd=row[p + "cost_usd"],
            charged=row[p + "charged"],
            created_at=row[p + "created_at"],
            _agent_id=row[p + "agent_id"],
            _agent_version=row[p + "agent_version"],
            _output_sources=row[p + "output_sources"],
            _output_fingerprints=row[p + "output_fingerprints"],
            _evaluation=row[p + "evaluation"],
            _rationale=row[p + "rationale"],
        )


@strawberry.type(description="Where one output of an analysis result comes from.")
class AnalysisOutputSource:
    output: str = strawberry.field(description="summary, successful, userSentiment, inVoicemail or customData.<field name>.")
    result_id: strawberry.ID = strawberry.field(description="The result whose model run produced the value.")
    carried_over: bool = strawberry.field(
        description="True when this result took the value from an earlier result instead of asking the model."
    )


_PRESET_ORDER = {base.SUMMARY: 0, base.SUCCESSFUL: 1, base.USER_SENTIMENT: 2, base.IN_VOICEMAIL: 3}


def output_order(outputs: Any) -> list[str]:
    """Output names in response order: the presets, then the custom data fields by name."""
    return sorted(outputs, key=lambda name: (_PRESET_ORDER.get(name, 4), name))


@strawberry.type
class Word:
    word: str
    start: float | None
    end: float | None


@strawberry.type(description="One turn of a call transcript.")
class Utterance:
    role: str
    content: str
    words: list[Word] | None


@strawberry.type(description="One message of a chat.")
class Message:
    role: str
    content: str
    created_at: datetime | None


_AGENT_DOC = "The agent that handled it."
_VERSION_DOC = "The agent version that handled it."
_ANALYSIS_DOC = "The newest completed analysis (initial or rerun); null before any."
_HISTORY_DOC = "Every earlier analysis result, newest first."

# Call and Chat relations are plain attributes, filled for a whole page at once by
# graphql_api.schema.query.hydrate_conversations (per-row resolvers cost more than the queries).


@strawberry.type(description="A voice call handled by an agent.")
class Call:
    id: strawberry.ID
    call_type: str | None = strawberry.field(description="web_call or phone_call.")
    call_status: ConversationStatus
    direction: str | None
    from_number: str | None
    to_number: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_ms: int | None
    disconnection_reason: str | None
    transcript: str
    metadata: JSON
    _row: strawberry.Private[Any]
    agent: Agent = strawberry.field(default=None, description=_AGENT_DOC)
    agent_version: AgentVersion = strawberry.field(default=None, description=_VERSION_DOC)
    analysis: AnalysisResult | None = strawberry.field(default=None, description=_ANALYSIS_DOC)
    analysis_history: list[AnalysisResult] = strawberry.field(default_factory=list, description=_HISTORY_DOC)
    _analysis_loaded: strawberry.Private[bool] = False

    @strawberry.field(description="The transcript turn by turn, with word timings where recorded.")
    def transcript_object(self) -> list[Utterance]:
        return [
            Utterance(
                role=u.get("role", ""),
                content=u.get("content", ""),
                words=[Word(word=w.get("word", ""), start=w.get("start"), end=w.get("end")) for w in u["words"]]
                if u.get("words") is not None
                else None,
            )
            for u in self._row["utterances"]
        ]

    @classmethod
    def from_row(cls, row: Any) -> Call:
        return cls(
            id=strawberry.ID(row["conversation_id"]),
            call_type=row["conversation_type"],
            call_status=ConversationStatus(row["status"]),
            direction=row["direction"],
            from_number=row["from_number"],
            to_number=row["to_number"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            duration_ms=row["duration_ms"],
            disconnection_reason=row["disconnection_reason"],
            transcript=row["transcript"],
            metadata=row["metadata"],
            _row=row,
        )


@strawberry.type(description="A chat handled by an agent.")
class Chat:
    id: strawberry.ID
    chat_type: str | None
    chat_status: ConversationStatus
    started_at: datetime | None
    ended_at: datetime | None
    transcript: str
    metadata: JSON
    _row: strawberry.Private[Any]
    agent: Agent = strawberry.field(default=None, description=_AGENT_DOC)
    agent_version: AgentVersion = strawberry.field(default=None, description=_VERSION_DOC)
    analysis: AnalysisResult | None = strawberry.field(default=None, description=_ANALYSIS_DOC)
    analysis_history: list[AnalysisResult] = strawberry.field(default_factory=list, description=_HISTORY_DOC)
    _analysis_loaded: strawberry.Private[bool] = False

    @strawberry.field
    def messages(self) -> list[Message]:
        return [
            Message(
                role=m.get("role", ""),
                content=m.get("content", ""),
                created_at=_ms_to_datetime(m.get("created_timestamp")),
            )
            for m in self._row["utterances"]
        ]

    @classmethod
    def from_row(cls, row: Any) -> Chat:
        return cls(
            id=strawberry.ID(row["conversation_id"]),
            chat_type=row["conversation_type"],
            chat_status=ConversationStatus(row["status"]),
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            transcript=row["transcript"],
            metadata=row["metadata"],
            _row=row,
        )


def _ms_to_datetime(ms: Any) -> datetime | None:
    from datetime import UTC

    if not isinstance(ms, (int, float)):
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@strawberry.type(description="A voice or chat agent with numbered versions; its latest version is always a draft.")
class Agent:
    id: strawberry.ID
    name: str
    channel: Channel
    created_at: datetime

    @strawberry.field(description="The latest draft: where analysis prompts are edited and what reruns use.")
    async def draft(self, info: Info) -> AgentVersion:
        row = await info.context.loaders.draft.load(self.id)
        if row is None:
            raise NotFound(f"Agent {self.id!r} has no draft.")
        return AgentVersion.from_row(row)

    @strawberry.field(description="Every version, newest first.")
    async def versions(self, info: Info) -> list[AgentVersion]:
        return [AgentVersion.from_row(r) for r in await info.context.loaders.versions_of_agent.load(self.id)]

    @strawberry.field(description="This agent's calls, newest first.")
    async def calls(
        self, info: Info, first: int | None = None, after: str | None = None, filter: ConversationFilter | None = None
    ) -> Connection[Call]:
        return await list_conversations(info, "CALL", first=first, after=after, filter=filter, agent_id=self.id)

    @strawberry.field(description="This agent's chats, newest first.")
    async def chats(
        self, info: Info, first: int | None = None, after: str | None = None, filter: ConversationFilter | None = None
    ) -> Connection[Chat]:
        return await list_conversations(info, "CHAT", first=first, after=after, filter=filter, agent_id=self.id)

    @classmethod
    def from_row(cls, row: Any) -> Agent:
        return cls(
            id=strawberry.ID(row["agent_id"]),
            name=row["name"],
            channel=Channel(row["channel"]),
            created_at=row["created_at"],
        )


# ---- fetching the edges of the graph: pages of calls and chats, and their relations -----------------
# (Here, beside the types, because Agent.calls needs them and they build Agent, Call and Chat objects.)


def _fields(selections: Iterable[Any]) -> Iterable[SelectedField]:
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        elif isinstance(selection, (FragmentSpread, InlineFragment)):
            yield from _fields(selection.selections)


def selected_node_fields(info: Info) -> set[str]:
    """Names of the fields selected on the nodes of the connection this resolver returns."""
    names: set[str] = set()
    for root in _fields(info.selected_fields):
        for field in _fields(root.selections):
            if field.name == "nodes":
                names.update(f.name for f in _fields(field.selections))
            elif field.name == "edges":
                for node in _fields(field.selections):
                    if node.name == "node":
                        names.update(f.name for f in _fields(node.selections))
    return names


def selected_object_fields(info: Info) -> set[str]:
    """Names of the fields selected on the object this resolver returns."""
    return {f.name for root in _fields(info.selected_fields) for f in _fields(root.selections)}


async def hydrate_conversations(info: Info, items: list[Call] | list[Chat], selected: set[str]) -> None:
    """Fill the relations the selection asks for, one batched query per relation for the whole page."""
    if not items:
        return
    loaders = info.context.loaders
    jobs: list[Any] = []

    if "agent" in selected:
        async def agents() -> None:
            rows = await loaders.agent.load_many([c._row["agent_id"] for c in items])
            cache: dict[str, Agent] = {}
            for item, row in zip(items, rows):
                item.agent = cache.get(row["agent_id"]) or cache.setdefault(row["agent_id"], Agent.from_row(row))

        jobs.append(agents())
    if "agentVersion" in selected:
        async def versions() -> None:
            rows = await loaders.version.load_many([(c._row["agent_id"], c._row["agent_version"]) for c in items])
            cache: dict[tuple[str, int], AgentVersion] = {}
            for item, row in zip(items, rows):
                key = (row["agent_id"], row["version"])
                item.agent_version = cache.get(key) or cache.setdefault(key, AgentVersion.from_row(row))

        jobs.append(versions())
    missing_analysis = [c for c in items if not c._analysis_loaded] if "analysis" in selected else []
    if missing_analysis:
        async def current() -> None:
            rows = await loaders.current_analysis.load_many([c.id for c in missing_analysis])
            for item, row in zip(missing_analysis, rows):
                item.analysis = AnalysisResult.from_row(row) if row is not None else None
                item._analysis_loaded = True

        jobs.append(current())
    if "analysisHistory" in selected:
        async def history() -> None:
            groups = await loaders.analysis_history.load_many([c.id for c in items])
            for item, rows in zip(items, groups):
                item.analysis_history = [AnalysisResult.from_row(r) for r in rows]

        jobs.append(history())
    if jobs:
        await asyncio.gather(*jobs)


async def list_conversations(
    info: Info,
    kind: Kind,
    *,
    first: int | None,
    after: str | None,
    filter: ConversationFilter | None,
    agent_id: str | None = None,
) -> Connection[Any]:
    workspace = info.context.require_workspace()
    page = Keyset.of(kind.lower(), first, after)
    selection = selection_of(kind, filter, agent_id)
    if selection.agent_id is not None and agent_id is None:
        if await info.context.loaders.agent.load(selection.agent_id) is None:
            raise not_found("agent", selection.agent_id)
    rows = await info.context.db.fetch_all(
        "conversations_page", workspace_id=workspace.id, kind=kind, **page.params(), **selection.filter_params()
    )
    model = Call if kind == "CALL" else Chat

    def node(row: Any) -> Call | Chat:
        item = model.from_row(row)
        item.analysis = AnalysisResult.from_row(row, prefix="r_") if row["r_id"] is not None else None
        item._analysis_loaded = True
        return item

    connection = page.connection(rows, node, at="sort_at", ident="conversation_id")
    await hydrate_conversations(info, [edge.node for edge in connection.edges], selected_node_fields(info))
    return connection


async def get_conversation(info: Info, kind: Kind, ident: str) -> Any:
    info.context.require_workspace()
    row = await info.context.loaders.conversation.load(ident)
    if row is None or row["kind"] != kind:
        raise not_found(kind.lower(), ident)
    item = (Call if kind == "CALL" else Chat).from_row(row)
    await hydrate_conversations(info, [item], selected_object_fields(info))
    return item
