"""The enums of the schema, shared by the object types, the inputs and the filters."""

from __future__ import annotations

from enum import Enum

import strawberry


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


@strawberry.enum(description="What made an edit of a draft's analysis config.")
class ConfigChangeOrigin(Enum):
    API = "api"  # updateDraftPrompts
    IMPORT = "import"  # `python -m graphql_api import`
    SEED = "seed"  # `python -m graphql_api seed` filling what was missing
