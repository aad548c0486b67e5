"""The GraphQL object types clients see, mapped from database rows.

Fields that point at other rows return what the parent already fetched when it did, and ask the
operation's DataLoader otherwise, so a page costs a fixed number of queries either way.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from graphql_api.analysis import base
from graphql_api.errors import NotFound
from graphql_api.schema.context import Info
from graphql_api.schema.pagination import Connection

@strawberry.enum(description="Where an agent talks to people.")
class Channel(Enum):
    VOICE = "VOICE"
    CHAT = "CHAT"


@strawberry.enum(description="What started an analysis run.")
class AnalysisTrigger(Enum):
    INITIAL = "INITIAL"
    RERUN = "RERUN"
    PREVIEW = "PREVIEW"


@strawberry.enum
class UserSentiment(Enum):
    NEGATIVE = "NEGATIVE"
    NEUTRAL = "NEUTRAL"
    POSITIVE = "POSITIVE"
    UNKNOWN = "UNKNOWN"


@strawberry.enum(description="The type of a custom analysis field.")
class DataFieldType(Enum):
    STRING = "STRING"
    ENUM = "ENUM"
    BOOLEAN = "BOOLEAN"
    NUMBER = "NUMBER"


@strawberry.enum(description="Status of a call or chat. Chats are only ONGOING, ENDED or ERROR.")
class ConversationStatus(Enum):
    REGISTERED = "registered"
    NOT_CONNECTED = "not_connected"
    ONGOING = "ongoing"
    ENDED = "ended"
    ERROR = "error"


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

    @classmethod
    def from_row(cls, row: Any) -> AnalysisConfig:
        return cls(
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


@strawberry.enum(description="What made an edit of a draft's analysis config.")
class ConfigChangeOrigin(Enum):
    API = "api"  # updateDraftPrompts
    IMPORT = "import"  # `python -m graphql_api import`
    SEED = "seed"  # `python -m graphql_api seed` filling what was missing


@strawberry.type(description="One edit of a draft's analysis config.")
class ConfigChange:
    changed_at: datetime
    changed_fields: list[str] = strawberry.field(description="summary_prompt, successful_prompt, user_sentiment_prompt, data_fields or model.")
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

    @strawberry.field(description="The agent version whose analysis config produced this result.")
    async def agent_version(self, info: Info) -> AgentVersion:
        return await _load_version(info, self._agent_id, self._agent_version)

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
        )


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


@strawberry.input(description="Narrows a list of calls or chats. Every condition given must hold.")
class ConversationFilter:
    agent_id: strawberry.ID | None = None
    versions: list[int] | None = strawberry.field(default=None, description="Agent versions that handled it.")
    started_after: datetime | None = strawberry.field(default=None, description="Started at or after (inclusive).")
    started_before: datetime | None = strawberry.field(default=None, description="Started before (exclusive).")
    successful: bool | None = strawberry.field(default=None, description="By the current analysis.")
    user_sentiment: list[UserSentiment] | None = strawberry.field(default=None, description="By the current analysis.")
    status: list[ConversationStatus] | None = None


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
        from graphql_api.schema.query import list_conversations

        return await list_conversations(info, "CALL", first=first, after=after, filter=filter, agent_id=self.id)

    @strawberry.field(description="This agent's chats, newest first.")
    async def chats(
        self, info: Info, first: int | None = None, after: str | None = None, filter: ConversationFilter | None = None
    ) -> Connection[Chat]:
        from graphql_api.schema.query import list_conversations

        return await list_conversations(info, "CHAT", first=first, after=after, filter=filter, agent_id=self.id)

    @classmethod
    def from_row(cls, row: Any) -> Agent:
        return cls(
            id=strawberry.ID(row["agent_id"]),
            name=row["name"],
            channel=Channel(row["channel"]),
            created_at=row["created_at"],
        )
